"""End-to-end tests of the CI gates of ``xent score`` (SPEC sections 4, 5 and 6; README "Gates for
CI"): ``--fail-if``, ``--baseline``, ``--allow-signature-mismatch`` and the exit codes they lead to.

The grammar itself is unit-tested in ``test_gates.py``; here every case goes through the CLI with
real files written in tmp_path. Exit codes are checked once through a real ``python -m xentcli``
process; everything else calls ``xentcli.cli.main(argv)`` in-process (stdout and stderr captured
apart by ``capsys``), which is what the process runs too.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import Result, clean_env, load_json, run_cli, run_proc

from xentcli import pipeline

CLASSES = ("cat", "dog", "bird")
METRIC_KEYS = ("cross_entropy", "entropy_target", "kl_divergence", "entropy_pred", "prior_entropy",
               "normalized_cross_entropy", "perplexity", "accuracy", "weight_sum")
GATE_KEYS = {"expr", "value", "threshold", "passed"}
README = Path(__file__).resolve().parents[1] / "README.md"
RTOL = 1e-12


# --------------------------------------------------------------------------------------------
# Checks


def close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0)


def failed_exprs(report: dict[str, Any]) -> list[str]:
    return [g["expr"] for g in report["gates"] if not g["passed"]]


def assert_gate_stderr(result: Result, report: dict[str, Any]) -> None:
    """One stderr line per failed gate, naming it; passed gates are not mentioned."""
    lines = result.err_lines()
    failed = failed_exprs(report)
    assert len(lines) == len(failed), result.err
    for expr in failed:
        assert sum(expr in line for line in lines) == 1, (expr, result.err)


# --------------------------------------------------------------------------------------------
# Data


Row = tuple[str, str, float, float, float]  # label, region, p_cat, p_dog, p_bird


def write_rows(path: Path, rows: list[Row]) -> Path:
    lines = ["label,region,p_cat,p_dog,p_bird"]
    lines += [f"{label},{region}," + ",".join(repr(float(p)) for p in probs)
              for label, region, *probs in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def model_rows(p_true: float, n: int = 12) -> list[Row]:
    """Every class and both regions; the true class gets about ``p_true`` (so accuracy 1 for
    p_true > 0.5), the rest is split 60/40 between the other two classes."""
    rows: list[Row] = []
    for i in range(n):
        k = i % 3
        pt = p_true - 0.01 * (i % 4)
        probs = [0.0, 0.0, 0.0]
        probs[k] = pt
        probs[(k + 1) % 3] = (1 - pt) * 0.6
        probs[(k + 2) % 3] = 1 - pt - (1 - pt) * 0.6
        rows.append((CLASSES[k], "eu" if i % 4 < 2 else "us", *probs))  # type: ignore[arg-type]
    return rows


def model(tmp_path: Path, name: str, p_true: float) -> Path:
    return write_rows(tmp_path / name, model_rows(p_true))


@pytest.fixture
def base_csv(tmp_path: Path) -> Path:
    return model(tmp_path, "base.csv", 0.6)


@pytest.fixture
def baseline(tmp_path: Path, base_csv: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A baseline written the documented way: ``xent score ... -f json -o base.json``."""
    path = tmp_path / "base.json"
    result = run_cli(capsys, "score", base_csv, "-f", "json", "-o", path)
    assert result.code == 0, result.err
    assert result.out == ""
    return path


def baseline_doc(path: Path) -> dict[str, Any]:
    return load_json(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Exit codes through a real process


def test_process_passing_gate_exits_0(base_csv: Path) -> None:
    result = run_proc("score", base_csv, "-f", "json", "--fail-if", "cross_entropy > 5")
    assert result.code == 0, result.err
    report = result.report
    assert report["passed"] is True
    [gate] = report["gates"]
    assert set(gate) == GATE_KEYS
    assert gate == {"expr": "cross_entropy > 5", "value": report["metrics"]["cross_entropy"],
                    "threshold": 5.0, "passed": True}
    assert result.err_lines() == []


def test_process_failing_gate_exits_1_and_still_writes_the_report(base_csv: Path) -> None:
    result = run_proc("score", base_csv, "-f", "json", "--fail-if", "cross_entropy > 0.1")
    assert result.code == 1, result.err
    report = result.report  # the full report is still on stdout
    assert report["passed"] is False
    assert report["metrics"]["cross_entropy"] > 0.1
    [gate] = report["gates"]
    assert gate == {"expr": "cross_entropy > 0.1", "value": report["metrics"]["cross_entropy"],
                    "threshold": 0.1, "passed": False}
    assert len(result.err_lines()) == 1
    assert "cross_entropy > 0.1" in result.err
    assert "Traceback" not in result.err


def test_process_failing_gate_with_output_file_still_writes_it(base_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run_proc("score", base_csv, "-f", "json", "-o", out, "--fail-if", "accuracy < 1.5")
    assert result.code == 1, result.err
    assert result.out == ""
    report = load_json(out.read_text(encoding="utf-8"))
    assert report["passed"] is False
    assert report["gates"] == [{"expr": "accuracy < 1.5", "value": 1.0, "threshold": 1.5,
                                "passed": False}]
    assert len(result.err_lines()) == 1 and "accuracy < 1.5" in result.err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_process_several_gates_one_failing_exits_1(base_csv: Path) -> None:
    gates = ["cross_entropy > 5", "accuracy < 0.5", "kl_divergence >= 0.2", "perplexity <= 1"]
    args = [a for g in gates for a in ("--fail-if", g)]
    result = run_proc("score", base_csv, "-f", "json", *args)
    assert result.code == 1, result.err
    report = result.report
    assert [g["expr"] for g in report["gates"]] == gates  # in the order given
    assert [g["passed"] for g in report["gates"]] == [True, True, False, True]
    assert report["passed"] is False
    assert_gate_stderr(result, report)


def test_process_malformed_gate_exits_2_with_nothing_on_stdout(base_csv: Path) -> None:
    result = run_proc("score", base_csv, "-f", "json", "--fail-if", "cross_entropy >> 0.1")
    assert result.code == 2
    assert result.out == ""
    assert "cross_entropy >> 0.1" in result.err
    assert "Traceback" not in result.err


def test_process_unknown_metric_exits_2_listing_the_metrics(base_csv: Path) -> None:
    result = run_proc("score", base_csv, "--fail-if", "log_loss > 0.1")
    assert result.code == 2
    assert result.out == ""
    assert "log_loss" in result.err
    for key in METRIC_KEYS:
        assert key in result.err, key
    assert "Traceback" not in result.err


def test_process_failing_gate_survives_a_closed_stdout(base_csv: Path) -> None:
    """``xent score ... --fail-if ... | head`` with the reader gone: the broken pipe ends quietly
    (no traceback), but the verdict must not turn into a pass (exit 1, not 0)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "xentcli", "score", str(base_csv), "--fail-if", "cross_entropy > 0.1"],
            stdout=write_end, stderr=subprocess.PIPE, timeout=60, env=clean_env(),
        )
    finally:
        os.close(write_end)
    err = proc.stderr.decode("utf-8")
    assert "Traceback" not in err
    assert proc.returncode == 1, (proc.returncode, err)


# --------------------------------------------------------------------------------------------
# More exit-code cases, in-process


def test_quiet_still_reports_failed_gates(capsys: pytest.CaptureFixture[str], base_csv: Path) -> None:
    """-q silences progress and warnings, not the verdict."""
    result = run_cli(capsys, "score", base_csv, "-q", "-f", "json", "--fail-if", "cross_entropy > 0.1")
    assert result.code == 1
    assert_gate_stderr(result, result.report)


@pytest.mark.parametrize("expr", [
    "cross_entropy",
    "cross_entropy > ",
    "cross_entropy = 0.1",
    "cross_entropy > 0.1 extra",
    "cross_entropy > baseline ^ 2",
    "per_class.accuracy < 0.5",
    "per_class.recall[cat] < 0.5",
    "__import__('os') > 0",
])
def test_malformed_gates_exit_2_before_scoring(
    capsys: pytest.CaptureFixture[str], base_csv: Path, tmp_path: Path, expr: str
) -> None:
    out = tmp_path / "r.json"
    result = run_cli(capsys, "score", base_csv, "-f", "json", "-o", out, "--fail-if", expr)
    assert result.code == 2, result.err
    assert result.out == ""
    assert not out.exists()


def test_baseline_gate_without_baseline_exits_2(capsys: pytest.CaptureFixture[str], base_csv: Path) -> None:
    result = run_cli(capsys, "score", base_csv, "--fail-if", "cross_entropy > baseline + 1%")
    assert result.code == 2
    assert result.out == ""
    assert "--baseline" in result.err


def test_no_gates_means_passed_and_empty_list(capsys: pytest.CaptureFixture[str], base_csv: Path) -> None:
    result = run_cli(capsys, "score", base_csv, "-f", "json")
    assert result.code == 0
    assert result.report["gates"] == []
    assert result.report["passed"] is True


def test_boundary_operators(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """accuracy is exactly 1.0: '>= 1' and '<= 1' hold (fail), '> 1' and '< 1' do not."""
    path = model(tmp_path, "m.csv", 0.6)
    exprs = ["accuracy >= 1", "accuracy <= 1", "accuracy > 1", "accuracy < 1"]
    result = run_cli(capsys, "score", path, "-f", "json", *[a for e in exprs for a in ("--fail-if", e)])
    assert result.code == 1
    assert [g["passed"] for g in result.report["gates"]] == [False, False, True, True]
    assert_gate_stderr(result, result.report)


# --------------------------------------------------------------------------------------------
# Baseline


def test_worse_model_fails_baseline_plus_percent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, baseline: Path
) -> None:
    worse = model(tmp_path, "worse.csv", 0.5)
    result = run_cli(capsys, "score", worse, "-f", "json", "--baseline", baseline,
                     "--fail-if", "cross_entropy > baseline + 1%")
    assert result.code == 1, result.err
    report = result.report
    base_ce = baseline_doc(baseline)["metrics"]["cross_entropy"]
    [gate] = report["gates"]
    assert gate["expr"] == "cross_entropy > baseline + 1%"
    assert close(gate["threshold"], base_ce * 1.01)
    assert gate["value"] == report["metrics"]["cross_entropy"] > base_ce * 1.01
    assert gate["passed"] is False and report["passed"] is False
    assert_gate_stderr(result, report)


def test_better_model_passes_baseline_plus_percent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, baseline: Path
) -> None:
    better = model(tmp_path, "better.csv", 0.7)
    result = run_cli(capsys, "score", better, "-f", "json", "--baseline", baseline,
                     "--fail-if", "cross_entropy > baseline + 1%",
                     "--fail-if", "accuracy < baseline")
    assert result.code == 0, result.err
    report = result.report
    base = baseline_doc(baseline)["metrics"]
    assert close(report["gates"][0]["threshold"], base["cross_entropy"] * 1.01)
    assert report["gates"][1]["threshold"] == base["accuracy"]
    assert report["passed"] is True
    assert result.err_lines() == []


def test_same_model_against_itself(
    capsys: pytest.CaptureFixture[str], base_csv: Path, baseline: Path
) -> None:
    """Same file, same settings: value == baseline exactly, so '>' passes and '>=' fails."""
    result = run_cli(capsys, "score", base_csv, "-f", "json", "--baseline", baseline,
                     "--fail-if", "cross_entropy > baseline", "--fail-if", "cross_entropy >= baseline")
    assert result.code == 1
    gt, ge = result.report["gates"]
    assert gt["value"] == gt["threshold"] == baseline_doc(baseline)["metrics"]["cross_entropy"]
    assert (gt["passed"], ge["passed"]) == (True, False)


@pytest.mark.parametrize(("rhs", "expected"), [
    ("baseline * 1.05", lambda b: b * 1.05),
    ("baseline - 0.01", lambda b: b - 0.01),
    ("baseline + 0.01", lambda b: b + 0.01),
    ("baseline - 5%", lambda b: b * 0.95),
    ("baseline", lambda b: b),
])
def test_baseline_arithmetic(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, baseline: Path, rhs: str, expected: Any
) -> None:
    worse = model(tmp_path, "worse.csv", 0.5)
    result = run_cli(capsys, "score", worse, "-f", "json", "--baseline", baseline,
                     "--fail-if", f"cross_entropy > {rhs}")
    base_ce = baseline_doc(baseline)["metrics"]["cross_entropy"]
    [gate] = result.report["gates"]
    assert close(gate["threshold"], expected(base_ce)), (gate, expected(base_ce))
    assert gate["passed"] is not (gate["value"] > gate["threshold"])
    assert result.code == (0 if gate["passed"] else 1)


def test_ratchet_baseline_and_output_are_the_same_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, baseline: Path
) -> None:
    """The baseline is read before the report replaces it: a CI job can keep one file."""
    old = baseline_doc(baseline)
    better = model(tmp_path, "better.csv", 0.7)
    result = run_cli(capsys, "score", better, "-f", "json", "-o", baseline, "--baseline", baseline,
                     "--fail-if", "cross_entropy > baseline")
    assert result.code == 0, result.err
    new = baseline_doc(baseline)
    assert new["gates"][0]["threshold"] == old["metrics"]["cross_entropy"]
    assert new["metrics"]["cross_entropy"] < old["metrics"]["cross_entropy"]
    assert new["passed"] is True


def test_per_class_and_group_baseline_gates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base_csv: Path
) -> None:
    """baseline is the same metric of the same class / group in the baseline report."""
    base = tmp_path / "base_by.json"
    assert run_cli(capsys, "score", base_csv, "--by", "region", "-f", "json", "-o", base).code == 0
    doc = baseline_doc(base)
    worse = model(tmp_path, "worse.csv", 0.5)
    result = run_cli(capsys, "score", worse, "--by", "region", "-f", "json", "--baseline", base,
                     "--fail-if", "per_class.cross_entropy[*] > baseline * 1.05",
                     "--fail-if", "groups.cross_entropy[eu] > baseline + 1%")
    assert result.code == 1, result.err
    gates = result.report["gates"]
    assert len(gates) == len(CLASSES) + 1
    for gate, entry in zip(gates, doc["per_class"], strict=False):
        assert entry["class"] in gate["expr"]
        assert close(gate["threshold"], entry["cross_entropy"] * 1.05)
    eu = next(g["metrics"] for g in doc["groups"] if g["by"] == {"region": "eu"})
    assert close(gates[-1]["threshold"], eu["cross_entropy"] * 1.01)


def test_signature_mismatch_exits_3_naming_both_signatures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base_csv: Path
) -> None:
    bits = tmp_path / "bits.json"
    assert run_cli(capsys, "score", base_csv, "--base", "2", "-f", "json", "-o", bits).code == 0
    bits_signature = baseline_doc(bits)["signature"]
    this_signature = run_cli(capsys, "score", base_csv, "-f", "json").report["signature"]
    assert bits_signature != this_signature

    out = tmp_path / "r.json"
    result = run_cli(capsys, "score", base_csv, "-f", "json", "-o", out, "--baseline", bits,
                     "--fail-if", "cross_entropy > baseline + 1%")
    assert result.code == 3, result.err
    assert result.out == ""
    assert bits_signature in result.err
    assert this_signature in result.err
    assert "--allow-signature-mismatch" in result.err  # the way out is named
    assert "Traceback" not in result.err

    result = run_cli(capsys, "score", base_csv, "-f", "json", "--baseline", bits,
                     "--allow-signature-mismatch", "--fail-if", "cross_entropy > baseline + 1%")
    assert result.code in (0, 1), result.err
    [gate] = result.report["gates"]
    assert close(gate["threshold"], baseline_doc(bits)["metrics"]["cross_entropy"] * 1.01)


def test_eps_change_is_a_signature_mismatch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base_csv: Path, baseline: Path
) -> None:
    """The signature covers the settings that change numbers: --eps changes it too."""
    result = run_cli(capsys, "score", base_csv, "--eps", "1e-9", "--baseline", baseline,
                     "--fail-if", "cross_entropy > baseline")
    assert result.code == 3, result.err
    assert result.out == ""


@pytest.mark.parametrize("version", [2, 0, "1", None, "missing"])
@pytest.mark.parametrize("allow", [False, True])
def test_schema_version_change_exits_3_even_with_the_flag(
    capsys: pytest.CaptureFixture[str], base_csv: Path, baseline: Path, version: Any, allow: bool
) -> None:
    doc = baseline_doc(baseline)
    if version == "missing":
        del doc["schema_version"]
    else:
        doc["schema_version"] = version
    baseline.write_text(json.dumps(doc), encoding="utf-8")
    flags = ["--allow-signature-mismatch"] if allow else []
    result = run_cli(capsys, "score", base_csv, "-f", "json", "--baseline", baseline, *flags,
                     "--fail-if", "cross_entropy > baseline + 1%")
    assert result.code == 3, result.err
    assert result.out == ""
    assert "schema_version" in result.err


@pytest.mark.parametrize(("expr", "edit"), [
    ("cross_entropy > baseline + 1%", lambda d: d["metrics"].pop("cross_entropy")),
    ("accuracy < baseline - 1%", lambda d: d["metrics"].pop("accuracy")),
    ("per_class.cross_entropy[cat] > baseline", lambda d: d["per_class"][0].pop("cross_entropy")),
    ("per_class.cross_entropy[*] > baseline", lambda d: d["per_class"].pop(2)),
    ("per_class.accuracy[dog] < baseline", lambda d: d.pop("per_class")),
    ("cross_entropy > baseline", lambda d: d.pop("metrics")),
])
def test_baseline_without_the_metric_exits_3(
    capsys: pytest.CaptureFixture[str], base_csv: Path, baseline: Path, expr: str, edit: Any
) -> None:
    doc = baseline_doc(baseline)
    edit(doc)
    baseline.write_text(json.dumps(doc), encoding="utf-8")
    result = run_cli(capsys, "score", base_csv, "-f", "json", "--baseline", baseline, "--fail-if", expr)
    assert result.code == 3, (result.code, result.err)
    assert "baseline" in result.err
    assert "Traceback" not in result.err


def test_missing_metric_is_not_waived_by_the_flag(
    capsys: pytest.CaptureFixture[str], base_csv: Path, baseline: Path
) -> None:
    """--allow-signature-mismatch waives the signature only (SPEC section 5)."""
    doc = baseline_doc(baseline)
    del doc["metrics"]["cross_entropy"]
    doc["signature"] = "something else"
    baseline.write_text(json.dumps(doc), encoding="utf-8")
    result = run_cli(capsys, "score", base_csv, "-f", "json", "--baseline", baseline,
                     "--allow-signature-mismatch", "--fail-if", "cross_entropy > baseline + 1%")
    assert result.code == 3, (result.code, result.err)
    assert result.out == ""


def test_baseline_without_the_group_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base_csv: Path, baseline: Path
) -> None:
    """The baseline was scored without --by: a group gate against it has no baseline value."""
    result = run_cli(capsys, "score", base_csv, "--by", "region", "-f", "json", "--baseline", baseline,
                     "--fail-if", "groups.cross_entropy[eu] > baseline")
    assert result.code == 3, (result.code, result.err)


def _truncated(text: str) -> str:
    return text[: len(text) // 2]


def _metric_literal(literal: str) -> Any:
    def edit(text: str) -> str:
        new, n = re.subn(r'("cross_entropy":\s*)[^,\n}]+', lambda m: m.group(1) + literal, text, count=1)
        assert n == 1
        return new
    return edit


CORRUPT: dict[str, Any] = {
    "truncated": _truncated,
    "empty": lambda t: "",
    "nan_literal": _metric_literal("NaN"),
    "infinity_literal": _metric_literal("Infinity"),
    "minus_infinity": _metric_literal("-Infinity"),
    "overflow_1e999": _metric_literal("1e999"),
    "huge_int": _metric_literal("1" + "0" * 400),
    "metric_is_text": _metric_literal('"0.5"'),
    "metric_is_bool": _metric_literal("true"),
    "metric_is_list": _metric_literal("[0.5]"),
    "deeply_nested": lambda t: "[" * 200_000 + "]" * 200_000,
    "deeply_nested_inside": lambda t: t.rstrip()[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}",
    "array": lambda t: f"[{t}]",
    "string": lambda t: json.dumps(t),
    "null": lambda t: "null",
    "number": lambda t: "0.5",
    "not_json": lambda t: "cross_entropy: 0.5\n",
    "metrics_not_object": lambda t: json.dumps({**json.loads(t), "metrics": [1, 2]}),
}


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_corrupt_baseline_exits_3_never_0(
    capsys: pytest.CaptureFixture[str], base_csv: Path, baseline: Path, kind: str
) -> None:
    baseline.write_text(CORRUPT[kind](baseline.read_text(encoding="utf-8")), encoding="utf-8")
    result = run_cli(capsys, "score", base_csv, "-f", "json", "--baseline", baseline,
                     "--fail-if", "cross_entropy > baseline + 1%")
    assert result.code == 3, (result.code, result.err[:500])
    assert result.out == ""
    assert "baseline" in result.err
    assert "Traceback" not in result.err
    assert len(result.err) < 2000  # one short message, not a dump of the file


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_unreadable_baseline_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base_csv: Path, kind: str
) -> None:
    path = tmp_path / "nope.json"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00\x80garbage\x00")
    result = run_cli(capsys, "score", base_csv, "--baseline", path,
                     "--fail-if", "cross_entropy > baseline")
    assert result.code == 3, (result.code, result.err)
    assert result.out == ""
    assert "nope.json" in result.err
    assert "Traceback" not in result.err


def test_null_metric_in_baseline_fails_the_gate(
    capsys: pytest.CaptureFixture[str], base_csv: Path, baseline: Path
) -> None:
    """A baseline metric that is null (unknown) gives an unknown threshold: the gate fails."""
    doc = baseline_doc(baseline)
    doc["metrics"]["cross_entropy"] = None
    baseline.write_text(json.dumps(doc), encoding="utf-8")
    result = run_cli(capsys, "score", base_csv, "-f", "json", "--baseline", baseline,
                     "--fail-if", "cross_entropy > baseline + 1%")
    assert result.code in (1, 3), result.err  # never a pass
    if result.code == 1:
        [gate] = result.report["gates"]
        assert gate["threshold"] is None and gate["passed"] is False


# --------------------------------------------------------------------------------------------
# per_class and groups


def mixed_rows() -> list[Row]:
    """cat and dog right, bird always predicted as dog (bird recall 0); eu right, us half right."""
    return [
        ("cat", "eu", 0.8, 0.1, 0.1),
        ("dog", "eu", 0.1, 0.8, 0.1),
        ("cat", "eu", 0.7, 0.2, 0.1),
        ("dog", "us", 0.2, 0.7, 0.1),
        ("bird", "us", 0.1, 0.6, 0.3),
        ("bird", "us", 0.2, 0.5, 0.3),
        ("cat", "us", 0.6, 0.3, 0.1),
    ]


@pytest.fixture
def mixed_csv(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "mixed.csv", mixed_rows())


def test_per_class_star_gate_expands_to_every_class(
    capsys: pytest.CaptureFixture[str], mixed_csv: Path
) -> None:
    result = run_cli(capsys, "score", mixed_csv, "-f", "json", "--fail-if", "per_class.accuracy[*] < 0.2")
    assert result.code == 1, result.err
    report = result.report
    gates = report["gates"]
    assert len(gates) == len(CLASSES)
    for gate, entry in zip(gates, report["per_class"], strict=True):
        assert set(gate) == GATE_KEYS
        assert entry["class"] in gate["expr"] and "*" not in gate["expr"]
        assert gate["value"] == entry["accuracy"]
        assert gate["threshold"] == 0.2
    assert [g["passed"] for g in gates] == [True, True, False]  # bird: recall 0
    assert_gate_stderr(result, report)
    assert "bird" in result.err and "cat" not in result.err


def test_per_class_named_gate(
    capsys: pytest.CaptureFixture[str], mixed_csv: Path, tmp_path: Path
) -> None:
    gate_args = ("--fail-if", "per_class.cross_entropy[cat] > 5")
    result = run_cli(capsys, "score", mixed_csv, "-f", "json", *gate_args)
    assert result.code == 0, result.err
    [gate] = result.report["gates"]
    assert gate["expr"] == "per_class.cross_entropy[cat] > 5"
    assert gate["value"] == result.report["per_class"][0]["cross_entropy"] < 5

    # one of the three cat rows almost missed: mean CE on cat about 7.3 > 5
    bad = write_rows(tmp_path / "bad.csv", [("cat", "eu", 1e-9, 0.5, 0.5 - 1e-9), *mixed_rows()[1:]])
    result = run_cli(capsys, "score", bad, "-f", "json", *gate_args)
    assert result.code == 1, result.err
    [gate] = result.report["gates"]
    assert gate["value"] == result.report["per_class"][0]["cross_entropy"] > 5
    assert gate["passed"] is False


@pytest.mark.parametrize("expr", ["per_class.accuracy[cow] < 0.5", "per_class.accuracy[Cat] < 0.5",
                                  "per_class.accuracy[0] < 0.5"])
def test_per_class_unknown_class_exits_2(
    capsys: pytest.CaptureFixture[str], mixed_csv: Path, tmp_path: Path, expr: str
) -> None:
    out = tmp_path / "r.json"
    result = run_cli(capsys, "score", mixed_csv, "-f", "json", "-o", out, "--fail-if", expr)
    assert result.code == 2, (result.code, result.err)
    assert result.out == ""
    assert not out.exists()
    for name in CLASSES:  # the classes that exist are listed
        assert name in result.err


def test_unknown_class_is_refused_before_scoring(
    capsys: pytest.CaptureFixture[str], mixed_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The class names of a wide file are known from its columns: a typo in a gate fails before
    a (possibly long) pass over the data starts."""
    def no_pass(*args: object) -> None:
        raise AssertionError("the file was scored before the gate was checked")

    monkeypatch.setattr(pipeline, "score_source", no_pass)
    result = run_cli(capsys, "score", mixed_csv, "--fail-if", "per_class.accuracy[cta] < 0.5")
    assert result.code == 2, result.err
    assert "no class 'cta'" in result.err
    for name in CLASSES:
        assert name in result.err


def test_group_gates(capsys: pytest.CaptureFixture[str], mixed_csv: Path) -> None:
    result = run_cli(capsys, "score", mixed_csv, "--by", "region", "-f", "json",
                     "--fail-if", "groups.cross_entropy[eu] > 0.1",
                     "--fail-if", "groups.accuracy[*] < 0.99")
    assert result.code == 1, result.err
    report = result.report
    by_region = {g["by"]["region"]: g["metrics"] for g in report["groups"]}
    assert set(by_region) == {"eu", "us"}
    first, *star = report["gates"]
    assert first["expr"] == "groups.cross_entropy[eu] > 0.1"
    assert first["value"] == by_region["eu"]["cross_entropy"] > 0.1
    assert first["passed"] is False
    assert len(star) == 2
    for gate in star:
        region = "eu" if "eu" in gate["expr"] else "us"
        assert f"[{region}]" in gate["expr"]
        assert gate["value"] == by_region[region]["accuracy"]
        assert gate["threshold"] == 0.99
        assert gate["passed"] is (by_region[region]["accuracy"] >= 0.99)
    assert {g["expr"].split("[")[1].split("]")[0] for g in star} == {"eu", "us"}
    assert [g["passed"] for g in star if "[eu]" in g["expr"]] == [True]  # eu is all right
    assert [g["passed"] for g in star if "[us]" in g["expr"]] == [False]
    assert_gate_stderr(result, report)


def test_group_gate_with_two_by_columns(capsys: pytest.CaptureFixture[str], mixed_csv: Path) -> None:
    """With several --by columns VALUE is the values joined by ',' (README)."""
    result = run_cli(capsys, "score", mixed_csv, "--by", "region", "--by", "label", "-f", "json",
                     "--fail-if", "groups.accuracy[us,bird] > 0.5")
    assert result.code == 0, result.err
    [gate] = result.report["gates"]
    group = next(g for g in result.report["groups"] if g["by"] == {"region": "us", "label": "bird"})
    assert gate["value"] == group["metrics"]["accuracy"] == 0.0


@pytest.mark.parametrize(("args", "expr"), [
    (["--by", "region"], "groups.accuracy[asia] < 0.5"),
    ([], "groups.accuracy[eu] < 0.5"),
    ([], "groups.accuracy[*] < 0.5"),
])
def test_unknown_group_exits_2(
    capsys: pytest.CaptureFixture[str], mixed_csv: Path, args: list[str], expr: str
) -> None:
    result = run_cli(capsys, "score", mixed_csv, *args, "-f", "json", "--fail-if", expr)
    assert result.code == 2, (result.code, result.err)
    assert result.out == ""


# --------------------------------------------------------------------------------------------
# Unknown values never pass


def test_infinite_loss_fails_every_gate_on_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--eps 0 and a zero probability on a true class: cross_entropy is null in JSON, and a gate on
    it fails whichever way it points (inf > 100 would hold anyway, inf < 100 would not)."""
    path = write_rows(tmp_path / "zero.csv", [("cat", "eu", 0.0, 0.9, 0.1), ("dog", "us", 0.1, 0.8, 0.1)])
    result = run_cli(capsys, "score", path, "--eps", "0", "-f", "json", "--fail-if", "cross_entropy > 100")
    assert result.code == 1, result.err
    report = result.report
    assert report["metrics"]["cross_entropy"] is None
    assert report["gates"] == [{"expr": "cross_entropy > 100", "value": None, "threshold": 100.0,
                                "passed": False}]
    assert report["passed"] is False
    assert_gate_stderr(result, report)

    result = run_cli(capsys, "score", path, "--eps", "0", "-f", "json",
                     "--fail-if", "cross_entropy < 100", "--fail-if", "per_class.cross_entropy[cat] < 1",
                     "--fail-if", "per_class.cross_entropy[dog] > 5")
    assert result.code == 1, result.err
    assert [(g["value"], g["passed"]) for g in result.report["gates"][:2]] == [(None, False), (None, False)]
    assert result.report["gates"][2]["passed"] is True  # dog's loss is finite and small


def test_null_normalized_cross_entropy_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Every row is a cat: prior entropy 0, normalized cross-entropy null, so the gate fails."""
    path = write_rows(tmp_path / "cats.csv", [("cat", "eu", 0.7, 0.2, 0.1), ("cat", "us", 0.6, 0.3, 0.1)])
    result = run_cli(capsys, "score", path, "-f", "json", "--fail-if", "normalized_cross_entropy > 0")
    assert result.code == 1, result.err
    report = result.report
    assert report["metrics"]["prior_entropy"] == 0
    assert report["metrics"]["normalized_cross_entropy"] is None
    assert report["gates"] == [{"expr": "normalized_cross_entropy > 0", "value": None,
                                "threshold": 0.0, "passed": False}]
    assert_gate_stderr(result, report)
    # also when the comparison points the other way
    result = run_cli(capsys, "score", path, "-f", "json", "--fail-if", "normalized_cross_entropy < 0")
    assert result.code == 1


def test_null_per_class_value_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """bird has no support: its recall is null, and per_class.accuracy[*] fails on it."""
    path = write_rows(tmp_path / "nobird.csv", [("cat", "eu", 0.7, 0.2, 0.1), ("dog", "us", 0.2, 0.7, 0.1)])
    result = run_cli(capsys, "score", path, "-f", "json", "--fail-if", "per_class.accuracy[*] < 0.5")
    assert result.code == 1, result.err
    gates = result.report["gates"]
    assert [(g["value"], g["passed"]) for g in gates] == [(1.0, True), (1.0, True), (None, False)]


# --------------------------------------------------------------------------------------------
# Rendering of gates


GATES_FOR_RENDER = ["cross_entropy > 0.1", "accuracy < 0.5"]


def test_table_output_shows_each_gate(capsys: pytest.CaptureFixture[str], base_csv: Path) -> None:
    args = [a for g in GATES_FOR_RENDER for a in ("--fail-if", g)]
    report = run_cli(capsys, "score", base_csv, "-f", "json", *args).report
    result = run_cli(capsys, "score", base_csv, "--precision", "4", *args)
    assert result.code == 1
    assert "Gates" in result.out
    lines = result.out.splitlines()
    for gate in report["gates"]:
        [line] = [x for x in lines if gate["expr"] in x]
        assert f"{gate['value']:.4f}" in line
        assert f"{gate['threshold']:.4f}" in line
        assert ("pass" if gate["passed"] else "FAIL") in line
    assert [g["passed"] for g in report["gates"]] == [False, True]
    assert_gate_stderr(result, report)


def test_table_output_shows_null_gate_value(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_rows(tmp_path / "cats.csv", [("cat", "eu", 0.7, 0.2, 0.1), ("cat", "us", 0.6, 0.3, 0.1)])
    result = run_cli(capsys, "score", path, "--fail-if", "normalized_cross_entropy > 0")
    assert result.code == 1
    [line] = [x for x in result.out.splitlines() if "normalized_cross_entropy > 0" in x]
    assert "FAIL" in line
    assert re.search(r"\bnull\b|\bn/a\b|—|\bnan\b", line, re.IGNORECASE)


def test_markdown_output_has_a_gates_table(capsys: pytest.CaptureFixture[str], base_csv: Path) -> None:
    args = [a for g in GATES_FOR_RENDER for a in ("--fail-if", g)]
    report = run_cli(capsys, "score", base_csv, "-f", "json", *args).report
    result = run_cli(capsys, "score", base_csv, "-f", "markdown", *args)
    assert result.code == 1
    lines = result.out.splitlines()
    header = next(i for i, x in enumerate(lines) if x.startswith("|") and "gate" in x.lower()
                  and "threshold" in x.lower())
    assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[header + 1].strip())  # the separator row
    rows = lines[header + 2: header + 2 + len(report["gates"])]
    for gate, row in zip(report["gates"], rows, strict=True):
        assert row.startswith("|")
        assert gate["expr"].replace(">", "").split()[0] in row
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert f"{gate['value']:.4f}" in cells
        assert f"{gate['threshold']:.4f}" in cells
        assert ("pass" if gate["passed"] else "FAIL") in row


def test_csv_output_carries_the_gates(capsys: pytest.CaptureFixture[str], base_csv: Path) -> None:
    args = [a for g in GATES_FOR_RENDER for a in ("--fail-if", g)]
    result = run_cli(capsys, "score", base_csv, "-f", "csv", *args)
    assert result.code == 1
    for expr in GATES_FOR_RENDER:
        assert expr in result.out


# --------------------------------------------------------------------------------------------
# The README's CI example, as written


def readme_ci_command() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Gates for CI", 1)[1]
    block = re.search(r"```(?:sh|bash|console)\n(.*?)```", section, re.DOTALL)
    assert block, "no shell example under 'Gates for CI' in README.md"
    argv = shlex.split(block.group(1).replace("\\\n", " "))
    assert argv[0] == "xent", argv
    return argv


def write_parquet(path: Path, rows: list[Row]) -> Path:
    table = pa.table({
        "label": [r[0] for r in rows],
        "region": [r[1] for r in rows],
        **{f"p_{c}": [float(r[2 + k]) for r in rows] for k, c in enumerate(CLASSES)},
    })
    pq.write_table(table, path)
    return path


def test_readme_ci_example_runs_as_written(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    argv = readme_ci_command()
    assert "--fail-if" in argv and "--baseline" in argv
    files = [a for a in argv[1:] if a.endswith((".parquet", ".csv"))]
    baseline_name = argv[argv.index("--baseline") + 1]
    output_name = argv[argv.index("-o") + 1] if "-o" in argv else None
    [preds] = files

    # the baseline, written the documented way
    monkeypatch.chdir(tmp_path)
    write_parquet(tmp_path / preds, model_rows(0.6))
    assert run_cli(capsys, "score", preds, "-f", "json", "-o", baseline_name).code == 0
    # the candidate: a bit better than the baseline
    write_parquet(tmp_path / preds, model_rows(0.65))

    xent = Path(sys.executable).with_name("xent")
    command = [str(xent)] if xent.exists() else [sys.executable, "-m", "xentcli"]
    result = run_proc(*argv[1:], cwd=tmp_path, command=command)
    assert result.code == 0, result.err
    report = load_json((tmp_path / output_name).read_text(encoding="utf-8")) if output_name \
        else result.report
    assert report["passed"] is True
    n_star = sum("[*]" in a for a in argv)
    assert len(report["gates"]) == argv.count("--fail-if") - n_star + n_star * len(CLASSES)

    # and a worse candidate fails the same command (in-process: nothing new to learn from a process)
    write_parquet(tmp_path / preds, model_rows(0.5))
    result = run_cli(capsys, *argv[1:])
    assert result.code == 1, result.err
    report = load_json((tmp_path / output_name).read_text(encoding="utf-8")) if output_name \
        else result.report
    assert report["passed"] is False
    assert "baseline" in failed_exprs(report)[0]
