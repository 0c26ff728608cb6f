"""``--fail-if`` gates: a small hand-written grammar (never eval), evaluation against a report
dict, and loading of the ``--baseline`` report the right-hand side may refer to.

Grammar (SPEC section 5)::

    gate   := metric OP rhs
    metric := KEY | "per_class" "." PC_KEY select | "groups" "." KEY select
    select := "[" NAME "]" | "[" "'" NAME "'" "]" | "[" '"' NAME '"' "]" | "[" "*" "]"
    OP     := ">" | ">=" | "<" | "<="
    rhs    := number | "baseline" [ ("+" | "-") number ["%"] | "*" number ]
    number := ["+" | "-"] DIGITS ["." DIGITS] [("e" | "E") ["+" | "-"] DIGITS]

A gate *fails* when its expression is true, and also when its value or threshold is unknown.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xentcli.errors import DataError, UsageError, escape_value, one_of
from xentcli.report.model import METRIC_KEYS, PER_CLASS_KEYS
from xentcli.report.model import GateOutcome as GateResult
from xentcli.report.render import safe

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
RHS_FORMS = (
    "number",
    "baseline",
    "baseline + X",
    "baseline - X",
    "baseline * X",
    "baseline + X%",
    "baseline - X%",
)
MAX_BASELINE_BYTES = 64 * 1024 * 1024

_GRAMMAR_HINT = (
    "a gate is METRIC OP RHS, e.g. 'cross_entropy > 0.4' or 'per_class.accuracy[*] < baseline - 2%'"
    f"; OP is {one_of(list(OPS))}; RHS is a number, {one_of(RHS_FORMS[1:])} (X a number)"
)
_METRIC_HINT = (
    f"METRIC is one of {one_of(METRIC_KEYS)}; or per_class.KEY[CLASS] / per_class.KEY[*] with "
    f"KEY one of {one_of(PER_CLASS_KEYS)}; or groups.KEY[VALUE] / groups.KEY[*] with KEY a "
    "metric name (quote odd names: ['a]b'])"
)
_BASELINE_HINT = "pass a report written earlier by `xent score --format json -o FILE.json`"
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OP_CHARS = re.compile(r"[<>=!]+")


@dataclasses.dataclass(frozen=True)
class Gate:
    """One parsed ``--fail-if`` expression.

    ``scope`` is ``metrics``, ``per_class`` or ``groups``; ``selector`` is the class name or
    group value (None for ``metrics`` and for ``[*]``); ``rhs`` is one of ``RHS_FORMS`` and
    ``number`` its X (the threshold itself for ``number``; None for a plain ``baseline``).
    """

    expr: str
    scope: str
    key: str
    selector: str | None
    op: str
    rhs: str
    number: float | None
    rhs_text: str  # the right-hand side as written, for expanded expressions

    @property
    def every(self) -> bool:
        """True for a ``[*]`` gate, which expands to one result per class or group."""
        return self.scope != "metrics" and self.selector is None

    @property
    def needs_baseline(self) -> bool:
        return self.rhs != "number"

    @property
    def path(self) -> tuple[str, ...]:
        """Metric path parts, e.g. ``("per_class", "cross_entropy", "cat")``; ``*`` for all."""
        if self.scope == "metrics":
            return (self.key,)
        return (self.scope, self.key, "*" if self.selector is None else self.selector)

    def metric_text(self, name: str | None) -> str:
        """The metric written out for one class or group ``name``."""
        if self.scope == "metrics" or name is None:
            return self.key
        return f"{self.scope}.{self.key}[{_quote_name(name)}]"

    def expr_for(self, name: str | None) -> str:
        """The expression text for one class or group (the original text unless ``[*]``)."""
        if not self.every:
            return self.expr
        return f"{self.metric_text(name)} {self.op} {self.rhs_text}"


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str  # name, number, op, sym, select, select_all, end
    text: str
    pos: int
    value: str = ""  # the name inside a selector


def _quote_name(name: str) -> str:
    if name and name != "*" and "]" not in name and name == name.strip() and name[0] not in "'\"":
        return name
    quote = "'" if "'" not in name else '"'
    return f"{quote}{name}{quote}"


def _syntax_error(expr: str, pos: int, problem: str, hint: str = _GRAMMAR_HINT) -> UsageError:
    where = f"at column {pos + 1}" if pos < len(expr.rstrip()) else "at the end"
    return UsageError(f"invalid gate {escape_value(expr, 200)}: {problem} ({where})", hint)


def _skip_space(expr: str, pos: int) -> int:
    while pos < len(expr) and expr[pos].isspace():
        pos += 1
    return pos


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while (pos := _skip_space(expr, pos)) < len(expr):
        tokens.append(_next_token(expr, pos))
        pos += len(tokens[-1].text)
    tokens.append(_Token("end", "", len(expr)))
    return tokens


def _next_token(expr: str, pos: int) -> _Token:
    if expr[pos] == "[":
        return _selector(expr, pos)
    for kind, pattern in (("number", _NUMBER), ("name", _NAME), ("op", _OP_CHARS)):
        if match := pattern.match(expr, pos):
            return _Token(kind, match.group(), pos)
    return _Token("sym", expr[pos], pos)


def _selector(expr: str, start: int) -> _Token:
    pos = _skip_space(expr, start + 1)
    quote = expr[pos : pos + 1]
    if quote in ("'", '"'):
        close = expr.find(quote, pos + 1)
        if close < 0:
            raise _syntax_error(expr, pos, f"missing closing {quote} in the name")
        end = _skip_space(expr, close + 1)
        if expr[end : end + 1] != "]":
            raise _syntax_error(expr, end, "expected ']' after the quoted name", _METRIC_HINT)
        return _Token("select", expr[start : end + 1], start, expr[pos + 1 : close])
    close = expr.find("]", start)
    if close < 0:
        raise _syntax_error(expr, start, "missing ']'", _METRIC_HINT)
    name = expr[start + 1 : close].strip()
    if not name:
        raise _syntax_error(expr, start, "empty '[]'; write a name or '*'", _METRIC_HINT)
    return _Token("select_all" if name == "*" else "select", expr[start : close + 1], start, name)


class _Parser:
    """Recursive descent over the token list; every method consumes what it parses."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += token.kind != "end"
        return token

    def fail(self, token: _Token, expected: str, hint: str = _GRAMMAR_HINT) -> UsageError:
        got = "the end of the expression" if token.kind == "end" else escape_value(token.text)
        return _syntax_error(self.expr, token.pos, f"expected {expected}, got {got}", hint)

    def metric(self) -> tuple[str, str, str | None]:
        head = self.take()
        if head.kind == "name" and head.text in METRIC_KEYS:
            return "metrics", head.text, None
        if head.kind != "name" or head.text not in ("per_class", "groups"):
            raise self.fail(head, "a metric name", _METRIC_HINT)
        if (dot := self.take()).text != ".":
            raise self.fail(dot, f"'.' after {head.text}", _METRIC_HINT)
        keys = PER_CLASS_KEYS if head.text == "per_class" else METRIC_KEYS
        key = self.take()
        if key.kind != "name" or key.text not in keys:
            raise self.fail(key, f"a {head.text} key: {one_of(keys)}", _METRIC_HINT)
        select = self.take()
        if select.kind not in ("select", "select_all"):
            raise self.fail(select, "'[NAME]' or '[*]' after the key", _METRIC_HINT)
        return head.text, key.text, select.value if select.kind == "select" else None

    def operator(self) -> str:
        token = self.take()
        if token.kind != "op" or token.text not in OPS:
            raise self.fail(token, f"an operator: {one_of(list(OPS))}")
        return token.text

    def number(self) -> float:
        sign = self.take().text if self.peek().text in ("+", "-") else ""
        token = self.take()
        if token.kind != "number":
            raise self.fail(token, "a finite number")
        value = float(sign + token.text)
        if not math.isfinite(value):
            raise self.fail(token, "a finite number (this one overflows float64)")
        return value

    def rhs(self) -> tuple[str, float | None]:
        if self.peek().text != "baseline":
            return "number", self.number()
        self.take()
        if self.peek().kind == "end":
            return "baseline", None
        arith = self.take()
        if arith.text not in ("+", "-", "*"):
            raise self.fail(arith, "'+', '-', '*' or the end after 'baseline'")
        number = self.number()
        if arith.text != "*" and self.peek().text == "%":
            self.take()
            return f"baseline {arith.text} X%", number
        return f"baseline {arith.text} X", number

    def end(self) -> None:
        if (token := self.peek()).kind != "end":
            raise self.fail(token, "the end of the expression")


def parse_gate(expr: str) -> Gate:
    """Parse one ``--fail-if`` expression ``METRIC OP RHS``.

    Raises
    ------
    UsageError
        On any malformed expression; the message quotes it and says where and what is allowed.
    """
    parser = _Parser(expr)
    scope, key, selector = parser.metric()
    op = parser.operator()
    rhs_start = parser.peek().pos
    rhs, number = parser.rhs()
    parser.end()
    rhs_text = expr[rhs_start:].strip()
    return Gate(expr.strip(), scope, key, selector, op, rhs, number, rhs_text)


def _as_number(raw: object) -> float | None:
    """A finite float, or None for null, non-numbers, booleans and non-finite values."""
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
        return None
    try:
        value = float(raw)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _as_text(raw: object) -> str:
    if raw is None or isinstance(raw, bool):
        return json.dumps(raw)
    return str(raw)


def _entries(doc: Mapping[str, Any], scope: str) -> list[tuple[str, Mapping[str, Any]]]:
    """Metric rows of one scope with their names: ``("", metrics)``, classes, or group values
    joined with ","; two groups may read the same (a value "b,c" next to "b" and "c", a null and
    the text "null"), and each is kept."""
    items = doc.get(scope)
    if scope == "metrics":
        return [("", items)] if isinstance(items, Mapping) else []
    found: list[tuple[str, Mapping[str, Any]]] = []
    for entry in items if isinstance(items, list) else []:
        if scope == "per_class" and isinstance(entry, Mapping):
            found.append((_as_text(entry.get("class")), entry))
        elif isinstance(entry, Mapping) and isinstance(entry.get("by"), Mapping):
            metrics = entry.get("metrics")
            if isinstance(metrics, Mapping):
                found.append((",".join(_as_text(v) for v in entry["by"].values()), metrics))
    return found


def _named(entries: list[tuple[str, Mapping[str, Any]]], name: str, gate: Gate,
           error: type[UsageError] | type[DataError], where: str) -> Mapping[str, Any] | None:
    """The entry called ``name`` (None: there is none); a name that several groups read as is
    refused rather than gating one of them."""
    rows = [row for entry, row in entries if entry == name]
    if len(rows) > 1:
        raise error(f"gate {escape_value(gate.expr, 200)}: {len(rows)} groups in {where} read "
                    f"{escape_value(name)} (their values joined with ',', a null as null), so "
                    "the gate cannot tell which one it means",
                    "make the values distinct" if gate.selector is None
                    else "gate them all with groups.KEY[*], or make the values distinct")
    return rows[0] if rows else None


def _json_text(raw: object, limit: int = 300) -> str:
    """A value from a JSON file as JSON text: control characters escaped, long text cut."""
    text = json.dumps(raw, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _some(names: Sequence[str], limit: int = 20) -> str:
    shown = one_of(list(names[:limit]))
    return shown if len(names) <= limit else f"{shown} ... ({len(names)} in all)"


def _targets(gate: Gate, report: Mapping[str, Any]) -> list[tuple[str | None, Mapping[str, Any]]]:
    entries = _entries(report, gate.scope)
    if gate.scope == "metrics":
        return [(None, entries[0][1] if entries else {})]
    noun = "class" if gate.scope == "per_class" else "group"
    if not entries:
        hint = "score with --by COL to get groups" if noun == "group" else None
        message = f"gate {escape_value(gate.expr, 200)}: the report has no {gate.scope}"
        raise UsageError(message, hint)
    if gate.selector is None:
        return list(entries)
    row = _named(entries, gate.selector, gate, UsageError, "the report")
    if row is None:
        raise UsageError(
            f"gate {escape_value(gate.expr, 200)}: no {noun} {escape_value(gate.selector)} "
            f"in the report; it has {_some(list(dict.fromkeys(name for name, _ in entries)))}"
        )
    return [(gate.selector, row)]


def check_classes(gates: Sequence[Gate], classes: Sequence[str]) -> None:
    """Refuse a gate on a class the input does not have, before the file is scored (the same
    message as after scoring, without waiting through a long run for a typo)."""
    known = {"per_class": [{"class": name} for name in classes]}
    for gate in gates:
        if gate.scope == "per_class":
            _targets(gate, known)


def _baseline_value(
    gate: Gate, name: str | None, baseline: Mapping[str, Any], path: str | None
) -> float | None:
    metric, where = gate.metric_text(name), escape_value(path or "(unnamed)", 200)
    row = _named(_entries(baseline, gate.scope), "" if name is None else name, gate, DataError,
                 f"baseline {where}")
    if row is None or gate.key not in row:
        raise DataError(
            f"baseline {where} has no {metric}",
            "score the baseline with the same classes and --by columns, or drop this gate",
        )
    raw = row[gate.key]
    value = _as_number(raw)
    if value is None and raw is not None:
        raise DataError(f"baseline {where}: {metric} is {_json_text(raw)}, not a number")
    return value


def _threshold(gate: Gate, base: float | None) -> float | None:
    x = gate.number if gate.number is not None else 0.0
    if gate.rhs == "number":
        return x
    if base is None:
        return None
    by_form = {
        "baseline": base,
        "baseline + X": base + x,
        "baseline - X": base - x,
        "baseline * X": base * x,
        "baseline + X%": base * (1 + x / 100),
        "baseline - X%": base * (1 - x / 100),
    }
    return _as_number(by_form[gate.rhs])


def require_baseline(gates: Sequence[Gate], given: bool, compare: bool = False) -> None:
    """Refuse a gate that refers to 'baseline' when there is none (checked before the inputs
    are read). ``compare`` gates the difference new − base, and has no baseline to refer to."""
    for gate in gates:
        if not gate.needs_baseline or given:
            continue
        if compare:
            raise UsageError(f"gate {escape_value(gate.expr, 200)}: compare gates the difference "
                             "new − base, which has no baseline",
                             "gate the difference against a number, e.g. 'cross_entropy > 0.01'")
        raise UsageError(
            f"gate {escape_value(gate.expr, 200)} compares with the baseline and needs "
            "--baseline FILE.json",
            _BASELINE_HINT,
        )


def evaluate_gates(
    gates: Sequence[Gate],
    report: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    *,
    baseline_path: str | None = None,
) -> list[GateResult]:
    """Evaluate gates against a report dict (SPEC section 4); ``[*]`` expands per class/group.

    A gate passes only when its value and threshold are both known and its expression is false.
    ``baseline`` is a report from `load_baseline`; ``baseline_path`` only names it in messages.

    Raises
    ------
    UsageError
        A ``baseline`` gate without a baseline, or an unknown class or group value.
    DataError
        The baseline lacks the gate's metric or holds a non-number there.
    """
    require_baseline(gates, baseline is not None)
    results = []
    for gate in gates:
        for name, row in _targets(gate, report):
            if gate.key not in row:  # a report (or a --baseline) made without that key
                keys = [k for k in row if k != "class"]
                raise UsageError(f"gate {escape_value(gate.expr, 200)}: this report's {gate.scope} has "
                                 f"no {gate.key}", f"it has {_some(keys)}")
            base = None
            if baseline is not None and gate.needs_baseline:
                base = _baseline_value(gate, name, baseline, baseline_path)
            value, threshold = _as_number(row.get(gate.key)), _threshold(gate, base)
            passed = (
                value is not None and threshold is not None and not OPS[gate.op](value, threshold)
            )
            results.append(GateResult(gate.expr_for(name), value, threshold, passed))
    return results


def _format_number(value: float | None, precision: int) -> str:
    if value is None:
        return "null"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return f"{value:.{precision}f}"
    return f"{value:.{precision}g}"


def _value_and_threshold(result: GateResult, precision: int) -> tuple[str, str]:
    """Both numbers at ``precision`` digits, or with as many more as it takes to tell them apart
    when they differ (a gate failed at its boundary: not "value 0.6016, threshold 0.6016")."""
    for digits in range(precision, 18):
        texts = _format_number(result.value, digits), _format_number(result.threshold, digits)
        if result.value == result.threshold or "null" in texts or float(texts[0]) != float(texts[1]):
            return texts
    return repr(result.value), repr(result.threshold)  # fixed digits cannot part them (near 1e-3)


def failure_lines(results: Sequence[GateResult], precision: int = 4) -> list[str]:
    """One line per failed gate: ``gate failed: EXPR (value V, threshold T)``."""
    lines = []
    for r in results:
        if not r.passed:
            value, threshold = _value_and_threshold(r, precision)
            lines.append(f"gate failed: {safe(r.expr)} (value {value}, threshold {threshold})")
    return lines


class _NonFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"number {text[:40]} overflows float64")
    return value


def _refuse_constant(name: str) -> object:
    raise _NonFinite(f"{name} literal (not valid JSON; xent writes null)")


def _read_json(path: str) -> object:
    shown = escape_value(path, 200)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BASELINE_BYTES + 1)
    except OSError as exc:
        message = f"cannot read baseline {shown}: {exc.strerror or exc}"
        raise DataError(message, _BASELINE_HINT) from exc
    if len(data) > MAX_BASELINE_BYTES:
        raise DataError(
            f"baseline {shown} is larger than {MAX_BASELINE_BYTES >> 20} MiB", _BASELINE_HINT
        )
    try:
        return json.loads(data, parse_float=_finite_float, parse_constant=_refuse_constant)
    except _NonFinite as exc:
        message = f"baseline {shown} holds a non-finite value: {exc}"
        raise DataError(message, _BASELINE_HINT) from None
    except json.JSONDecodeError as exc:
        problem = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise DataError(f"baseline {shown} is not valid JSON: {problem}", _BASELINE_HINT) from exc
    except (ValueError, RecursionError) as exc:  # bad encoding, over-long ints, absurd nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:80]
        raise DataError(f"baseline {shown} is not valid JSON: {reason}", _BASELINE_HINT) from None


def _check_header(
    doc: Mapping[str, Any], shown: str, signature: str, schema_version: int, allow: bool
) -> None:
    if "schema_version" not in doc:
        raise DataError(
            f"baseline {shown} has no schema_version; is it a xent JSON report?", _BASELINE_HINT
        )
    version = doc["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != schema_version:
        raise DataError(
            f"baseline {shown} has schema_version {_json_text(version)}; "
            f"this xent writes {schema_version}",
            "score the baseline again with this xent version",
        )
    found = doc.get("signature")
    if found != signature and not allow:
        raise DataError(
            f"baseline {shown} was scored with other settings:\n"
            f"  baseline: {_json_text(found)}\n  this run: {_json_text(signature)}",
            "score both the same way, or pass --allow-signature-mismatch to compare anyway",
        )


def _check_metrics(doc: Mapping[str, Any], shown: str) -> None:
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict):
        raise DataError(f"baseline {shown} has no 'metrics' object", _BASELINE_HINT)
    for key, raw in metrics.items():
        if raw is not None and _as_number(raw) is None:
            raise DataError(
                f"baseline {shown}: metric {escape_value(key)} is {_json_text(raw)}, "
                "expected a number or null",
                _BASELINE_HINT,
            )


def load_baseline(
    path: str, report_signature: str, schema_version: int, allow_signature_mismatch: bool
) -> dict[str, Any]:
    """Read and check a ``--baseline`` report written earlier by ``--format json``.

    Raises
    ------
    DataError
        Unreadable, too large, not JSON, non-finite numbers, too deep, not an object, another
        schema_version, another signature (unless ``allow_signature_mismatch``), or ``metrics``
        not an object of numbers and nulls.
    """
    doc = _read_json(path)
    shown = escape_value(path, 200)
    if not isinstance(doc, dict):
        raise DataError(
            f"baseline {shown} is JSON but not an object (a report is {{...}})", _BASELINE_HINT
        )
    _check_header(doc, shown, report_signature, schema_version, allow_signature_mismatch)
    _check_metrics(doc, shown)
    return doc
