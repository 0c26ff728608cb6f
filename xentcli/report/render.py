"""Report → text: a rich table for people, JSON for machines, long CSV, and Markdown."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from xentcli.report.model import METRIC_KEYS, PER_CLASS_KEYS, Report, group_label

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

METRIC_LABELS = {
    "cross_entropy": "cross-entropy (log loss)",
    "entropy_target": "entropy of targets",
    "kl_divergence": "KL divergence",
    "entropy_pred": "entropy of predictions",
    "prior_entropy": "prior entropy (base rate loss)",
    "normalized_cross_entropy": "normalized cross-entropy",
    "perplexity": "perplexity",
    "accuracy": "accuracy",
    "weight_sum": "weight sum",
}
CLASS_HEADERS = {
    "support": "support", "share": "share", "mean_pred": "mean pred", "cross_entropy": "CE",
    "loss_share": "loss share", "kl_divergence": "KL", "entropy_pred": "H(pred)",
    "accuracy": "recall",
}
_UNITLESS = {"normalized_cross_entropy", "perplexity", "accuracy", "weight_sum", "share",
             "mean_pred", "loss_share", "support"}


def safe(text: str) -> str:
    """Text from the input as printable characters: a control character (an ESC that would
    recolour the terminal, a newline that would break a table row) is shown as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def format_number(value: float | None, precision: int) -> str:
    """Fixed digits, switching to scientific for values too small to show; None → 'null'."""
    if value is None:
        return "null"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and abs(value) < 10.0 ** (-precision):
        return f"{value:.{max(precision - 1, 0)}e}"
    if abs(value) >= 1e16:  # a perplexity of e^700: not three hundred digits
        return f"{value:.{precision}e}"
    return f"{value:.{precision}f}"


def format_amount(value: float | None, precision: int) -> str:
    """Supports and weight sums: whole numbers without decimals (they are usually row counts)."""
    if value is not None and math.isfinite(value) and float(value).is_integer():
        return f"{int(value):,}"
    return format_number(value, precision)


_AMOUNTS = {"support", "weight_sum"}


def _cell(key: str, value: float | None, precision: int) -> str:
    return format_amount(value, precision) if key in _AMOUNTS else format_number(value, precision)


def render(report: Report, fmt: str, precision: int = 4, color: bool = False) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "markdown":
        return render_markdown(report, precision)
    return render_table(report, precision, color)


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), allow_nan=False, indent=2, ensure_ascii=False) + "\n"


def _scopes(data: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    scopes = [("overall", data["metrics"], data["per_class"])]
    for group in data["groups"]:
        name = "group:" + ",".join(f"{k}={group_label(v)}" for k, v in group["by"].items())
        scopes.append((name, group["metrics"], group["per_class"]))
    return scopes


def render_csv(report: Report) -> str:
    """Long format: one row per (scope, class, metric); class is empty for aggregates. Rows of
    scope "report" give the unit, the signature and the inputs."""
    data = report.to_dict(finite=False)
    rows: list[list[Any]] = [["scope", "class", "metric", "value"],
                             ["report", "", "unit", data["unit"]],
                             ["report", "", "signature", data["signature"]]]
    rows += [["report", "", "input", name] for name in data["inputs"]]
    counts = data["rows"]
    rows += [["rows", "", key, counts[key]] for key in ("read", "scored", "skipped", "clipped")]
    rows += [["rows", "", f"skipped:{reason}", n] for reason, n in counts["skipped_by_reason"].items()]
    for scope, metrics, per_class in _scopes(data):
        rows += [[scope, "", key, _csv_value(metrics[key])] for key in METRIC_KEYS]
        rows += [[scope, entry["class"], key, _csv_value(entry[key])]
                 for entry in per_class for key in PER_CLASS_KEYS]
    rows += [["gate", "", gate["expr"], "pass" if gate["passed"] else "fail"] for gate in data["gates"]]
    return _csv_text(rows)


def _csv_text(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as CSV with "\n" line ends. The csv module quotes only the line end's characters,
    so a row with a carriage return in a field (which readers take for a line end) is written
    with every field quoted."""
    import csv  # only the CSV format needs it

    out = io.StringIO()
    minimal = csv.writer(out, lineterminator="\n")
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        (quoted if any(isinstance(c, str) and "\r" in c for c in row) else minimal).writerow(row)
    return out.getvalue()


def _csv_value(value: float | None) -> str:
    """A number in full; an infinite loss as inf; an undefined value (None, NaN) empty."""
    if value is None or math.isnan(value):
        return ""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def _unit(key: str, unit: str) -> str:
    return "" if key in _UNITLESS else unit


def _worst_class(report: Report) -> int | None:
    losses = [(c.cross_entropy, k) for k, c in enumerate(report.scores.per_class)
              if c.cross_entropy is not None and not math.isnan(c.cross_entropy)]
    return max(losses)[1] if len(losses) > 1 else None


def _md_escape(text: str) -> str:
    """A cell's text as itself in Markdown, escaped only where it would not be: a pipe splits
    the cell; *, ` and ~ make emphasis or code; an underscore at a word's edge emphasis; < before
    a letter HTML; [ before ]( a link. Line ends become spaces."""
    def special(i: int, c: str) -> bool:
        after = text[i + 1: i + 2]
        if c == "_":
            return not (text[i - 1: i].isalnum() and after.isalnum())
        if c == "<":
            return after.isalpha() or after in ("/", "!", "?")
        if c == "[":
            return "](" in text[i:]
        return c in "\\|*`~"

    return "".join(" " if c in "\r\n" else "\\" + c if special(i, c) else c for i, c in enumerate(text))


class _Markdown(str):
    """A cell that is Markdown already (not escaped again)."""


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c if isinstance(c, _Markdown) else _md_escape(c) for c in row) + " |"
              for row in rows]
    return [*lines, ""]


def _header_lines(report: Report) -> list[tuple[str, str]]:
    rows = report.rows
    row_text = f"{rows.scored:,} scored of {rows.read:,} read"
    if rows.skipped:
        row_text += f", {rows.skipped:,} skipped"
    if rows.clipped:
        row_text += f", {rows.clipped:,} probabilities clipped"
    return [
        ("inputs", ", ".join(map(safe, report.inputs))),
        ("rows", row_text),
        ("classes", _class_summary(report.classes)),
        ("unit", report.unit),
        ("signature", report.signature),
    ]


def _class_summary(classes: Sequence[str], shown: int = 12) -> str:
    """The header's class line: the count and the first names (all of them are in the
    per-class table)."""
    text = f"{len(classes)}: " + ", ".join(map(safe, classes[:shown]))
    if len(classes) > shown:
        text += f" and {len(classes) - shown:,} more (all in the per-class table)"
    return text


def _class_rows(report: Report, precision: int) -> list[list[str]]:
    return [[safe(name)] + [_cell(key, getattr(cs, key), precision) for key in PER_CLASS_KEYS]
            for name, cs in zip(report.classes, report.scores.per_class, strict=False)]


def _gate_rows(report: Report, precision: int) -> list[list[str]]:
    return [[safe(g.expr), format_number(g.value, precision), format_number(g.threshold, precision),
             "pass" if g.passed else "FAIL"] for g in report.gates]


def _group_rows(report: Report, precision: int) -> list[list[str]]:
    keys = ("cross_entropy", "normalized_cross_entropy", "kl_divergence", "accuracy")
    return [[safe(", ".join(f"{k}={group_label(v)}" for k, v in g.by.items())), f"{g.rows:,}"]
            + [format_number(getattr(g.scores, key), precision) for key in keys]
            for g in report.groups]


def _worst_rows(report: Report, precision: int) -> list[list[str]]:
    return [[safe(w.file), str(w.row), safe(w.id or ""), safe(w.label), format_number(w.p_true, precision),
             format_number(w.cross_entropy, precision)] for w in report.worst]


GROUP_HEADERS = ["group", "rows", "CE", "NE", "KL", "accuracy"]
WORST_HEADERS = ["file", "row", "id", "label", "p(true)", "CE"]
GATE_HEADERS = ["gate", "value", "threshold", "result"]


def render_markdown(report: Report, precision: int = 4) -> str:
    lines = ["## xent report", ""]
    lines += [f"- **{k}**: {_md_escape(v)}" for k, v in _header_lines(report)] + [""]
    metric_rows = [[METRIC_LABELS[k], _cell(k, getattr(report.scores, k), precision),
                    _unit(k, report.unit)] for k in METRIC_KEYS]
    lines += _md_table(["metric", "value", "unit"], metric_rows)
    worst = _worst_class(report)
    class_rows = _class_rows(report, precision)
    if worst is not None:
        class_rows[worst][0] = _Markdown(f"**{_md_escape(class_rows[worst][0])}** (highest CE)")
    lines += ["### Per class", "", *_md_table(["class", *CLASS_HEADERS.values()], class_rows)]
    if report.groups:
        lines += ["### Groups", "", *_md_table(GROUP_HEADERS, _group_rows(report, precision))]
    if report.worst:
        lines += ["### Worst rows", "", *_md_table(WORST_HEADERS, _worst_rows(report, precision))]
    if report.gates:
        verdict = "passed" if report.passed else "**failed**"
        lines += [f"### Gates: {verdict}", "", *_md_table(GATE_HEADERS, _gate_rows(report, precision))]
    return "\n".join(lines)


def render_table(report: Report, precision: int = 4, color: bool = False) -> str:
    """Rich tables, rendered to text here so that the CLI decides where the text goes."""
    return _to_text(_table_renderables(report, precision), color)


def _to_text(renderables: Sequence[RenderableType], color: bool) -> str:
    """Rendered without markup or highlighting; not a terminal: no colour and no wrapping."""
    buffer = io.StringIO()
    console = text_console(buffer, color)
    for renderable in renderables:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def text_console(buffer: io.StringIO, color: bool = False) -> Console:
    """A rich console writing into ``buffer``, without markup, highlighting or emoji; for a
    terminal (``color``) as wide as it is, else wide enough that no line is cut or wrapped."""
    from rich.console import Console

    return Console(file=buffer, width=None if color else 1_000_000, color_system="auto" if color else None,
                   force_terminal=color, highlight=False, emoji=False, markup=False)


def _header_table(title: str, pairs: Sequence[tuple[str, str]]) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    header = Table(box=None, show_header=False, pad_edge=False, title=title, title_justify="left",
                   title_style="bold")
    header.add_column(style="dim")
    header.add_column()
    for key, value in pairs:
        header.add_row(key, Text(value))
    return header


def _rows_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> RenderableType:
    """A titled table, first column left-aligned, a FAIL row in bold red."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left")
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(Text(c) for c in row), style="bold red" if row[-1] == "FAIL" else None)
    return table


def _table_renderables(report: Report, precision: int) -> list[RenderableType]:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    header = _header_table("xent report", _header_lines(report))

    metrics = Table(box=box.SIMPLE_HEAD, title="Metrics", title_justify="left")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    metrics.add_column("unit")
    for key in METRIC_KEYS:
        metrics.add_row(METRIC_LABELS[key], _cell(key, getattr(report.scores, key), precision),
                        _unit(key, report.unit))

    worst = _worst_class(report)
    caption = None if worst is None else "◀ marks the class with the highest cross-entropy"
    per_class = Table(box=box.SIMPLE_HEAD, title=f"Per class ({report.unit})", title_justify="left",
                      caption=caption, caption_justify="left")
    per_class.add_column("class")
    for title in CLASS_HEADERS.values():
        per_class.add_column(title, justify="right")
    for k, row in enumerate(_class_rows(report, precision)):
        name = Text(row[0] + (" ◀" if k == worst else ""))
        per_class.add_row(name, *row[1:], style="bold red" if k == worst else None)
    out: list[RenderableType] = [header, metrics, per_class]
    out += _extra_tables(report, precision)
    return out


def _extra_tables(report: Report, precision: int) -> list[RenderableType]:
    out: list[RenderableType] = []
    if report.groups:
        out.append(_rows_table("Groups", GROUP_HEADERS, _group_rows(report, precision)))
    if report.worst:
        out.append(_rows_table("Worst rows", WORST_HEADERS, _worst_rows(report, precision)))
    if report.gates:
        verdict = "all passed" if report.passed else "FAILED"
        out.append(_rows_table(f"Gates: {verdict}", GATE_HEADERS, _gate_rows(report, precision)))
    return out


COMPARE_HEADERS = ["metric", "base", "new", "diff", "CI low", "CI high"]


def _compare_rows(data: dict[str, Any], precision: int) -> list[list[str]]:
    return [[METRIC_LABELS[key]] + [_cell(key, m[k], precision)
                                    for k in ("base", "new", "diff", "ci_low", "ci_high")]
            for key, m in data["metrics"].items()]


def _compare_class_rows(data: dict[str, Any], precision: int) -> list[list[str]]:
    return [[safe(c["class"])] + [format_number(c[key][k], precision)
                            for key in ("cross_entropy", "accuracy") for k in ("base", "new", "diff")]
            for c in data["per_class"]]


COMPARE_CLASS_HEADERS = ["class", "CE base", "CE new", "CE diff", "recall base", "recall new",
                         "recall diff"]


def _compare_header(data: dict[str, Any]) -> list[tuple[str, str]]:
    boot = data["bootstrap"]
    interval = (f"{boot['confidence']:.0%} paired bootstrap, {boot['replicates']} replicates, "
                f"seed {boot['seed']}") if boot["replicates"] else "no bootstrap"
    inputs = data["inputs"]
    return [("base", safe(", ".join(inputs["base"]))), ("new", safe(", ".join(inputs["new"]))),
            ("rows", f"{data['rows']['paired']:,} paired by {data['join']}"), ("unit", data["unit"]),
            ("interval", interval), ("signature", data["signature"])]


def render_compare(report: Any, fmt: str, precision: int = 4, color: bool = False) -> str:
    """A CompareReport in any of the four formats; diff = new − base."""
    if fmt == "json":
        return json.dumps(report.to_dict(), allow_nan=False, indent=2, ensure_ascii=False) + "\n"
    data = report.to_dict(finite=False)  # an infinite loss shown as inf, not as null
    gates = [[safe(g["expr"]), format_number(g["value"], precision), format_number(g["threshold"], precision),
              "pass" if g["passed"] else "FAIL"] for g in data["gates"]]
    if fmt == "csv":
        return _compare_csv(data)
    if fmt == "markdown":
        lines = ["## xent compare", ""] + [f"- **{k}**: {_md_escape(v)}" for k, v in _compare_header(data)]
        lines += ["", *_md_table(COMPARE_HEADERS, _compare_rows(data, precision))]
        class_rows = _compare_class_rows(data, precision)
        lines += ["### Per class", "", *_md_table(COMPARE_CLASS_HEADERS, class_rows)]
        if gates:
            lines += ["### Gates", "", *_md_table(GATE_HEADERS, gates)]
        return "\n".join(lines)
    return _compare_table(data, precision, color, gates)


def _compare_csv(data: dict[str, Any]) -> str:
    """compare's long CSV: base, new, diff and the interval's ends in columns."""
    rows: list[list[Any]] = [["scope", "class", "metric", "base", "new", "diff", "ci_low", "ci_high"]]
    rows += [["report", "", key, data[key], data[key], "", "", ""] for key in ("unit", "signature")]
    rows.append(["report", "", "input", ", ".join(data["inputs"]["base"]), ", ".join(data["inputs"]["new"]),
                 "", "", ""])
    paired = data["rows"]["paired"]
    rows.append(["rows", "", "paired", paired, paired, "", "", ""])
    rows += [["rows", "", key, data["base"]["rows"][key], data["new"]["rows"][key], "", "", ""]
             for key in ("read", "scored", "skipped")]
    rows += [["overall", "", key, *(_csv_value(m[k]) for k in ("base", "new", "diff", "ci_low", "ci_high"))]
             for key, m in data["metrics"].items()]
    rows += [["class", c["class"], key, *(_csv_value(c[key][k]) for k in ("base", "new", "diff")), "", ""]
             for c in data["per_class"] for key in PER_CLASS_KEYS]
    # as in score's CSV: each gate's outcome, here in the diff column
    rows += [["gate", "", g["expr"], "", "", "pass" if g["passed"] else "fail", "", ""]
             for g in data["gates"]]
    return _csv_text(rows)


def _compare_table(data: dict[str, Any], precision: int, color: bool, gates: list[list[str]]) -> str:
    tables = (("Metrics", COMPARE_HEADERS, _compare_rows(data, precision)),
              ("Per class", COMPARE_CLASS_HEADERS, _compare_class_rows(data, precision)),
              ("Gates", GATE_HEADERS, gates))
    renderables = [_header_table("xent compare (diff = new − base)", _compare_header(data))]
    renderables += [_rows_table(title, headers, rows) for title, headers, rows in tables if rows]
    return _to_text(renderables, color)
