"""Tests for xentcli.gates: the --fail-if grammar, evaluation and baseline loading."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from xentcli.errors import DataError, UsageError, escape_value
from xentcli.gates import (
    METRIC_KEYS,
    PER_CLASS_KEYS,
    Gate,
    GateResult,
    evaluate_gates,
    failure_lines,
    load_baseline,
    parse_gate,
)

SIG = "xent:0.1.0|base:e|eps:2.2e-16|scale:probs|sum_tol:0.001|renorm:no|weights:no|invalid:error"


def make_report(**metrics: Any) -> dict[str, Any]:
    """A small SPEC-section-4 report: two classes, two groups by (region, device)."""
    base = {"cross_entropy": 0.4123, "accuracy": 0.9, "normalized_cross_entropy": None}
    base.update(metrics)
    return {
        "schema_version": 1,
        "signature": SIG,
        "metrics": base,
        "per_class": [
            {"class": "cat", "support": 3.0, "cross_entropy": 0.3, "accuracy": 1.0},
            {"class": "dog", "support": 1.0, "cross_entropy": 0.7, "accuracy": None},
        ],
        "groups": [
            {
                "by": {"region": "eu", "device": "mobile"},
                "rows": 2,
                "metrics": {"cross_entropy": 0.2, "accuracy": 1.0},
                "per_class": [],
            },
            {
                "by": {"region": "us", "device": "web"},
                "rows": 2,
                "metrics": {"cross_entropy": 0.6, "accuracy": 0.5},
                "per_class": [],
            },
        ],
    }


def evaluate(
    expr: str, report: dict[str, Any], baseline: dict[str, Any] | None = None
) -> list[GateResult]:
    return evaluate_gates([parse_gate(expr)], report, baseline)


# --- grammar: good forms -------------------------------------------------------------------


@pytest.mark.parametrize("key", METRIC_KEYS)
def test_every_metric_key_parses(key: str) -> None:
    gate = parse_gate(f"{key} > 1")
    assert (gate.scope, gate.key, gate.selector, gate.path) == ("metrics", key, None, (key,))


@pytest.mark.parametrize("key", PER_CLASS_KEYS)
def test_every_per_class_key_parses(key: str) -> None:
    gate = parse_gate(f"per_class.{key}[cat] < 0.5")
    assert gate.path == ("per_class", key, "cat")


@pytest.mark.parametrize("op", [">", ">=", "<", "<="])
def test_every_operator_parses(op: str) -> None:
    assert parse_gate(f"accuracy {op} 0.5").op == op


@pytest.mark.parametrize(
    ("rhs", "form", "number"),
    [
        ("0.4", "number", 0.4),
        ("3", "number", 3.0),
        ("-2.5", "number", -2.5),
        ("+2", "number", 2.0),
        ("1e-3", "number", 1e-3),
        ("2.5E+2", "number", 250.0),
        (".5", "number", 0.5),
        ("5.", "number", 5.0),
        ("baseline", "baseline", None),
        ("baseline + 0.01", "baseline + X", 0.01),
        ("baseline - 0.01", "baseline - X", 0.01),
        ("baseline * 1.05", "baseline * X", 1.05),
        ("baseline + 1%", "baseline + X%", 1.0),
        ("baseline - 2.5%", "baseline - X%", 2.5),
        ("baseline+1e-2%", "baseline + X%", 0.01),
        ("baseline - -1", "baseline - X", -1.0),
    ],
)
def test_rhs_forms(rhs: str, form: str, number: float | None) -> None:
    gate = parse_gate(f"cross_entropy > {rhs}")
    assert (gate.rhs, gate.number, gate.rhs_text) == (form, number, rhs)
    assert gate.needs_baseline == (form != "number")


def test_whitespace_is_optional_anywhere() -> None:
    tight = parse_gate("per_class.cross_entropy[cat]>=baseline*2")
    loose = parse_gate("  per_class . cross_entropy [ cat ]  >=  baseline  *  2  ")
    for gate in (tight, loose):
        assert gate.path == ("per_class", "cross_entropy", "cat")
        assert (gate.op, gate.rhs, gate.number) == (">=", "baseline * X", 2.0)
    assert loose.expr == "per_class . cross_entropy [ cat ]  >=  baseline  *  2"


def test_full_structure_of_a_parsed_gate() -> None:
    assert parse_gate("groups.accuracy[eu,mobile] < baseline - 2%") == Gate(
        expr="groups.accuracy[eu,mobile] < baseline - 2%",
        scope="groups",
        key="accuracy",
        selector="eu,mobile",
        op="<",
        rhs="baseline - X%",
        number=2.0,
        rhs_text="baseline - 2%",
    )


@pytest.mark.parametrize(
    ("expr", "selector"),
    [
        ("per_class.support[*] > 1", None),
        ("per_class.support[ * ] > 1", None),
        ("per_class.support['*'] > 1", "*"),
        ("per_class.support['a]b'] > 1", "a]b"),
        ('per_class.support["x"] > 1', "x"),
        ("per_class.support[' padded '] > 1", " padded "),
        ("per_class.support[ NA ] > 1", "NA"),
        ("per_class.support[a b.c:d] > 1", "a b.c:d"),
        ("groups.cross_entropy[eu, mobile] > 1", "eu, mobile"),
    ],
)
def test_selectors(expr: str, selector: str | None) -> None:
    gate = parse_gate(expr)
    assert gate.selector == selector
    assert gate.every == (selector is None)


# --- grammar: errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("", "expected a metric name, got the end of the expression"),
        ("   ", "expected a metric name"),
        ("cross_entropy", "expected an operator"),
        ("cross_entropy 0.4", "expected an operator: '>', '>=', '<' or '<=', got '0.4'"),
        ("cross_entropy == 0.4", "got '=='"),
        ("cross_entropy = 0.4", "got '='"),
        ("cross_entropy != 0.4", "got '!='"),
        ("cross_entropy >> 0.4", "got '>>'"),
        ("cross_entropy >", "expected a finite number, got the end"),
        ("crossentropy > 0.4", "expected a metric name, got 'crossentropy'"),
        ("metrics.cross_entropy > 0.4", "expected a metric name, got 'metrics'"),
        ("per_class.perplexity[cat] > 1", "expected a per_class key"),
        ("per_class.bogus[cat] > 1", "got 'bogus'"),
        ("groups.support[eu] > 1", "expected a groups key"),
        ("per_class cross_entropy[cat] > 1", "expected '.' after per_class"),
        ("per_class.cross_entropy > 1", "expected '[NAME]' or '[*]'"),
        ("per_class.cross_entropy[cat > 1", "missing ']'"),
        ("per_class.cross_entropy[] > 1", "empty '[]'"),
        ("per_class.cross_entropy['cat] > 1", "missing closing '"),
        ("per_class.cross_entropy['cat'x] > 1", "expected ']' after the quoted name"),
        ("cross_entropy[cat] > 1", "expected an operator"),
        ("cross_entropy > 0.4 junk", "expected the end of the expression, got 'junk'"),
        ("cross_entropy > 0.4 0.5", "got '0.5'"),
        ("cross_entropy > 0.4%", "got '%'"),
        ("cross_entropy > 1_000", "got '_000'"),
        ("cross_entropy > baseline + x%", "expected a finite number, got 'x'"),
        ("cross_entropy > baseline + %", "expected a finite number, got '%'"),
        ("cross_entropy > baseline / 2", "expected '+', '-', '*' or the end after 'baseline'"),
        ("cross_entropy > baseline * 2%", "got '%'"),
        ("cross_entropy > baseline 2", "got '2'"),
        ("cross_entropy > Baseline", "got 'Baseline'"),
        ("cross_entropy > inf", "expected a finite number, got 'inf'"),
        ("cross_entropy > -inf", "got 'inf'"),
        ("cross_entropy > nan", "got 'nan'"),
        ("cross_entropy > 1e999", "overflows float64"),
        ("cross_entropy > baseline + 1e999%", "overflows float64"),
        ("cross_entropy > (0.4)", "got '('"),
    ],
)
def test_malformed_expressions_raise_usage_error(expr: str, problem: str) -> None:
    with pytest.raises(UsageError, match=re.escape(problem)) as info:
        parse_gate(expr)
    message = str(info.value)
    assert message.startswith(f"invalid gate {escape_value(expr)}: ")
    assert re.search(r"\((at column \d+|at the end)\)$", message)
    assert info.value.exit_code == 2
    assert info.value.hint


def test_error_says_where_and_what_is_allowed() -> None:
    with pytest.raises(UsageError) as info:
        parse_gate("cross_entropy == 0.4")
    assert str(info.value).endswith("(at column 15)")
    assert "'baseline + X%'" in (info.value.hint or "")
    with pytest.raises(UsageError) as info:
        parse_gate("entropy > 1")
    assert "'normalized_cross_entropy'" in (info.value.hint or "")
    assert "'loss_share'" in (info.value.hint or "")


def test_control_characters_are_escaped_in_messages() -> None:
    with pytest.raises(UsageError, match=re.escape(r"invalid gate 'cross_entropy\n> 1 ;'")):
        parse_gate("cross_entropy\n> 1 ;")


# --- evaluation ----------------------------------------------------------------------------


def test_number_gate_passes_and_fails() -> None:
    report = make_report()
    assert evaluate("cross_entropy > 0.5", report) == [
        GateResult("cross_entropy > 0.5", 0.4123, 0.5, True)
    ]
    assert evaluate("cross_entropy > 0.4", report) == [
        GateResult("cross_entropy > 0.4", 0.4123, 0.4, False)
    ]


@pytest.mark.parametrize(("op", "passed"), [(">", True), (">=", False), ("<", True), ("<=", False)])
def test_equal_value_and_threshold(op: str, passed: bool) -> None:
    [result] = evaluate(f"accuracy {op} 0.9", make_report())
    assert result.passed is passed


@pytest.mark.parametrize("value", [None, float("inf"), float("nan"), "0.1", True])
def test_unknown_value_never_passes(value: Any) -> None:
    [result] = evaluate("cross_entropy > 100", make_report(cross_entropy=value))
    assert (result.value, result.passed) == (None, False)


def test_null_metric_fails_both_ways() -> None:
    report = make_report()
    results = evaluate_gates(
        [parse_gate("normalized_cross_entropy > 1"), parse_gate("normalized_cross_entropy < 1")],
        report,
        None,
    )
    assert [r.passed for r in results] == [False, False]


def test_to_dict_has_exactly_the_report_keys() -> None:
    [result] = evaluate("cross_entropy < 0.4", make_report())
    assert result.to_dict() == {
        "expr": "cross_entropy < 0.4",
        "value": 0.4123,
        "threshold": 0.4,
        "passed": True,
    }
    json.dumps(result.to_dict(), allow_nan=False)


def test_per_class_lookup() -> None:
    [result] = evaluate("per_class.cross_entropy[dog] > 0.5", make_report())
    assert (result.value, result.passed) == (0.7, False)
    [result] = evaluate("per_class.accuracy[dog] < 0.5", make_report())
    assert (result.value, result.passed) == (None, False)


def test_per_class_star_expands_with_concrete_expressions() -> None:
    results = evaluate("per_class.cross_entropy[*]>0.5", make_report())
    assert results == [
        GateResult("per_class.cross_entropy[cat] > 0.5", 0.3, 0.5, True),
        GateResult("per_class.cross_entropy[dog] > 0.5", 0.7, 0.5, False),
    ]


def test_star_expansion_quotes_odd_names() -> None:
    report = make_report()
    report["per_class"] = [{"class": "a]b", "support": 1.0}, {"class": "*", "support": 2.0}]
    results = evaluate("per_class.support[*] > 5", report)
    assert [r.expr for r in results] == [
        "per_class.support['a]b'] > 5",
        "per_class.support['*'] > 5",
    ]
    for result in results:  # the concrete text parses back to the same class
        assert evaluate(result.expr, report) == [result]


def test_groups_lookup_joins_by_values() -> None:
    [result] = evaluate("groups.cross_entropy[us,web] > 0.5", make_report())
    assert (result.value, result.passed) == (0.6, False)
    results = evaluate("groups.accuracy[*] < 0.75", make_report())
    assert [(r.expr, r.passed) for r in results] == [
        ("groups.accuracy[eu,mobile] < 0.75", True),
        ("groups.accuracy[us,web] < 0.75", False),
    ]


def test_groups_with_one_column_and_non_text_values() -> None:
    report = make_report()
    report["groups"] = [
        {"by": {"fold": 3}, "rows": 1, "metrics": {"accuracy": 0.5}, "per_class": []},
        {"by": {"fold": None}, "rows": 1, "metrics": {"accuracy": 0.7}, "per_class": []},
    ]
    assert evaluate("groups.accuracy[3] < 0.6", report)[0].passed is False
    assert evaluate("groups.accuracy[null] < 0.6", report)[0].passed is True


def test_unknown_class_names_the_available_ones() -> None:
    with pytest.raises(UsageError, match=r"no class 'cow' in the report; it has 'cat' or 'dog'"):
        evaluate("per_class.accuracy[cow] < 0.5", make_report())


def test_unknown_group_names_the_available_ones() -> None:
    with pytest.raises(UsageError, match=r"no group 'eu' in the report; it has 'eu,mobile' or"):
        evaluate("groups.accuracy[eu] < 0.5", make_report())


def test_groups_gate_without_groups_asks_for_by() -> None:
    report = make_report()
    report["groups"] = []
    with pytest.raises(UsageError, match="the report has no groups") as info:
        evaluate("groups.accuracy[*] < 0.5", report)
    assert "--by" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("rhs", "threshold"),
    [
        ("baseline", 0.4),
        ("baseline + 0.01", 0.41),
        ("baseline - 0.01", 0.39),
        ("baseline * 1.5", 0.6),
        ("baseline + 1%", 0.404),
        ("baseline - 1%", 0.396),
        ("baseline + 100%", 0.8),
    ],
)
def test_baseline_thresholds(rhs: str, threshold: float) -> None:
    baseline = make_report(cross_entropy=0.4)
    [result] = evaluate(f"cross_entropy > {rhs}", make_report(), baseline)
    assert result.threshold == pytest.approx(threshold, rel=0, abs=1e-15)
    assert result.passed is (threshold >= 0.4123)


def test_baseline_per_class_star_uses_each_class() -> None:
    baseline = make_report()
    baseline["per_class"][0]["cross_entropy"] = 0.25
    baseline["per_class"][1]["cross_entropy"] = 0.8
    results = evaluate("per_class.cross_entropy[*] > baseline + 10%", make_report(), baseline)
    assert [r.expr for r in results] == [
        "per_class.cross_entropy[cat] > baseline + 10%",
        "per_class.cross_entropy[dog] > baseline + 10%",
    ]
    assert [r.threshold for r in results] == pytest.approx([0.275, 0.88], abs=1e-15)
    assert [r.passed for r in results] == [False, True]


def test_baseline_null_value_fails() -> None:
    baseline = make_report(cross_entropy=None)
    [result] = evaluate("cross_entropy > baseline", make_report(), baseline)
    assert (result.value, result.threshold, result.passed) == (0.4123, None, False)


def test_overflowing_threshold_fails() -> None:
    baseline = make_report(cross_entropy=1e308)
    [result] = evaluate("cross_entropy > baseline * 10", make_report(), baseline)
    assert (result.threshold, result.passed) == (None, False)


def test_baseline_gate_without_baseline_is_usage_error() -> None:
    with pytest.raises(UsageError, match=r"'cross_entropy > baseline \+ 1%' .*needs --baseline"):
        evaluate("cross_entropy > baseline + 1%", make_report())


def test_number_gate_ignores_baseline() -> None:
    [result] = evaluate("cross_entropy > 0.5", make_report(), {"metrics": {}})
    assert result.passed


def test_metric_missing_in_baseline_is_data_error() -> None:
    baseline = make_report()
    del baseline["metrics"]["accuracy"]
    gate = parse_gate("accuracy < baseline")
    with pytest.raises(DataError, match=r"baseline 'old\.json' has no accuracy") as info:
        evaluate_gates([gate], make_report(), baseline, baseline_path="old.json")
    assert info.value.exit_code == 3


def test_class_or_group_missing_in_baseline_is_data_error() -> None:
    baseline = make_report()
    baseline["per_class"] = baseline["per_class"][:1]
    with pytest.raises(DataError, match=re.escape("has no per_class.cross_entropy[dog]")):
        evaluate("per_class.cross_entropy[*] > baseline", make_report(), baseline)
    baseline["groups"] = "garbage"
    with pytest.raises(DataError, match=re.escape("has no groups.accuracy[us,web]")):
        evaluate("groups.accuracy[us,web] < baseline", make_report(), baseline)


def test_non_number_in_baseline_is_data_error() -> None:
    baseline = make_report()
    baseline["per_class"][0]["cross_entropy"] = "0.3"
    with pytest.raises(DataError, match=r'per_class.cross_entropy\[cat\] is "0.3", not a number'):
        evaluate("per_class.cross_entropy[cat] > baseline", make_report(), baseline)


# --- failure lines -------------------------------------------------------------------------


def test_failure_lines() -> None:
    results = [
        GateResult("cross_entropy > baseline + 1%", 0.4123, 0.404, False),
        GateResult("accuracy < 0.5", 0.9, 0.5, True),
        GateResult("normalized_cross_entropy > 1", None, 1.0, False),
        GateResult("per_class.support[x] < 1e-5", 2e-6, 1e-5, False),
    ]
    assert failure_lines(results) == [
        "gate failed: cross_entropy > baseline + 1% (value 0.4123, threshold 0.4040)",
        "gate failed: normalized_cross_entropy > 1 (value null, threshold 1.0000)",
        "gate failed: per_class.support[x] < 1e-5 (value 2e-06, threshold 1e-05)",
    ]
    assert failure_lines(results[1:2]) == []


# --- load_baseline -------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "base.json") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(path: str, signature: str = SIG, allow: bool = False) -> dict[str, Any]:
    return load_baseline(path, signature, 1, allow)


def test_load_good_baseline(tmp_path: Path) -> None:
    report = make_report()
    assert load(write(tmp_path, json.dumps(report))) == report


def test_signature_mismatch_is_error_unless_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps(make_report()))
    other = SIG.replace("base:e", "base:2")
    with pytest.raises(DataError, match="scored with other settings") as info:
        load(path, signature=other)
    assert "base:e" in str(info.value) and "base:2" in str(info.value)
    assert "--allow-signature-mismatch" in (info.value.hint or "")
    assert load(path, signature=other, allow=True)["signature"] == SIG


def test_missing_signature_is_a_mismatch(tmp_path: Path) -> None:
    report = make_report()
    del report["signature"]
    path = write(tmp_path, json.dumps(report))
    with pytest.raises(DataError, match="baseline: null"):
        load(path)
    assert "signature" not in load(path, allow=True)


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        (2, "has schema_version 2; this xent writes 1"),
        ("1", 'schema_version "1"'),
        (True, "schema_version true"),
        (None, "schema_version null"),
    ],
)
def test_schema_version_mismatch_is_always_error(
    tmp_path: Path, version: Any, problem: str
) -> None:
    path = write(tmp_path, json.dumps(make_report() | {"schema_version": version}))
    with pytest.raises(DataError, match=re.escape(problem)):
        load(path, allow=True)


def test_missing_schema_version(tmp_path: Path) -> None:
    report = make_report()
    del report["schema_version"]
    with pytest.raises(DataError, match="has no schema_version"):
        load(write(tmp_path, json.dumps(report)))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"metrics": {"cross_entropy": NaN}}', "non-finite value: NaN literal"),
        ('{"metrics": {"cross_entropy": -Infinity}}', "non-finite value: -Infinity literal"),
        ('{"metrics": {"cross_entropy": 1e999}}', "non-finite value: number 1e999 overflows"),
        ('{"metrics": {"cross_entropy": 1' + "0" * 5000 + "}}", "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("", "not valid JSON: Expecting value at line 1, column 1"),
        ('{"metrics": {}', "not valid JSON: Expecting ',' delimiter"),
        ("[1, 2]", "JSON but not an object"),
        ('"text"', "JSON but not an object"),
        ("null", "JSON but not an object"),
    ],
)
def test_hostile_or_broken_files_are_data_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=re.escape(problem)) as info:
        load(path, allow=True)
    assert path in str(info.value)
    assert info.value.exit_code == 3


def test_invalid_utf8_is_data_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"metrics": "\xff\xfe"}')
    with pytest.raises(DataError, match="not valid JSON"):
        load(str(path))


def test_unreadable_file_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot read baseline '.*missing.json': No such file"):
        load(str(tmp_path / "missing.json"))
    with pytest.raises(DataError, match="cannot read baseline"):
        load(str(tmp_path))


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import xentcli.gates

    monkeypatch.setattr(xentcli.gates, "MAX_BASELINE_BYTES", 100)
    path = write(tmp_path, json.dumps(make_report()))
    with pytest.raises(DataError, match="is larger than"):
        load(path)


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        (None, "has no 'metrics' object"),
        ([0.4], "has no 'metrics' object"),
        ({"cross_entropy": "0.4"}, """metric 'cross_entropy' is "0.4", expected a number"""),
        ({"accuracy": True}, "metric 'accuracy' is true"),
        ({"accuracy": [1]}, "metric 'accuracy' is [1]"),
        ({"cross_entropy": 10**400}, "metric 'cross_entropy' is 1000"),
        ({"accuracy": {"x": 1}}, """metric 'accuracy' is {"x": 1}"""),
    ],
)
def test_metrics_must_be_numbers_or_nulls(tmp_path: Path, metrics: Any, problem: str) -> None:
    path = write(tmp_path, json.dumps(make_report() | {"metrics": metrics}))
    with pytest.raises(DataError, match=re.escape(problem)):
        load(path)


def test_loaded_baseline_drives_gates(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps(make_report(cross_entropy=0.4)))
    baseline = load(path)
    [result] = evaluate("cross_entropy > baseline + 1%", make_report(), baseline)
    assert result.threshold == pytest.approx(0.404, rel=0, abs=1e-15)
    assert failure_lines([result]) == [
        "gate failed: cross_entropy > baseline + 1% (value 0.4123, threshold 0.4040)"
    ]


def test_failure_lines_part_neighbouring_numbers() -> None:
    """Numbers that no count of fixed decimals tells apart (neighbouring floats near 1e-3) are
    printed in full."""
    value = 0.001
    threshold = math.nextafter(value, 0)
    [line] = failure_lines([GateResult("cross_entropy > 0.001", value, threshold, False)])
    shown = re.fullmatch(r"gate failed: cross_entropy > 0\.001 \(value (\S+), threshold (\S+)\)", line)
    assert shown is not None, line
    assert (float(shown[1]), float(shown[2])) == (value, threshold), line  # each read back exactly
