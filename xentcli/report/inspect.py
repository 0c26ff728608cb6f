"""``xent inspect``: what auto-detection chose for a file, and why, before trusting a number."""

from __future__ import annotations

import io

import pyarrow as pa

from xentcli.errors import escape_value
from xentcli.io.layout import Layout, is_numeric, is_text
from xentcli.io.sources import PARTITION_METADATA, Source


def _label_rule(layout: Layout) -> str:
    if layout.label_column is None:
        return "none (soft targets)"
    if layout.binary:
        if layout.positive is not None:
            return f"binary: {layout.positive!r} is positive, the other value negative"
        return "binary: 0/1 or false/true; the prediction column is P(positive)"
    if layout.positional_labels:
        return "integer labels are class positions 0..K-1 (no class name is an integer)"
    return f"{layout.label_kind} labels match class names by their text"


def _ignored_why(fld: pa.Field) -> str:
    dtype = fld.type
    if fld.metadata == PARTITION_METADATA:
        return "a partition key (key=value directories), a column for --by"
    if is_text(dtype):
        return "text column that is not a prediction (no shared prefix)"
    if is_numeric(dtype):
        return "numeric column outside the prediction columns' prefix"
    return "not a role xent reads"


def render_inspection(source: Source, schema: pa.Schema, layout: Layout, rows: int | None) -> str:
    """Plain text: file facts, then one line per column with its role and the reason."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from xentcli.report.render import text_console

    out = io.StringIO()
    console = text_console(out)
    classes = list(layout.classes or ())
    facts = Table(box=None, show_header=False, pad_edge=False)
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("file", Text(source.name))
    facts.add_row("format", source.format)
    facts.add_row("rows", f"{rows:,}" if rows is not None else "unknown until read (not in metadata)")
    class_text = ", ".join(escape_value(c) for c in classes) if classes else "named by the data"
    facts.add_row("classes", Text(f"{len(classes) or 2}: {class_text} ({layout.class_origin})"))
    facts.add_row("labels", _label_rule(layout))
    facts.add_row("scale", layout.scale)
    console.print(facts)
    columns = Table(box=box.SIMPLE_HEAD, title="Columns", title_justify="left")
    for header in ("column", "type", "role", "why"):
        columns.add_column(header)
    for fld in schema:
        role, why = layout.reasons.get(fld.name, ("ignored", _ignored_why(fld)))
        columns.add_row(Text(escape_value(fld.name)), str(fld.type), role, Text(why))
    console.print(columns)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"
