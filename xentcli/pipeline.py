"""score(sources, options) -> Report: read → decode → validate → accumulate, one streaming pass."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, cast

import pyarrow as pa

from xentcli import __version__
from xentcli.core.accumulator import DEFAULT_EPS, SCALES, UNITS, base_text, is_number, is_whole, unit_factor
from xentcli.errors import CellProblem, DataError, UsageError, escape_value
from xentcli.io import readers
from xentcli.io.decode import LabelMapper, list_width
from xentcli.io.layout import Layout, LayoutRequest, resolve_layout
from xentcli.io.sources import Source, resolve_sources
from xentcli.report.model import GroupReport, Report, RowCounts, WorstRow, group_order
from xentcli.stream import RowSink, Run, StreamSettings, renumber, score_source

DEFAULT_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class ScoreOptions:
    """Every setting of a scoring run; the defaults are the CLI's."""

    layout: LayoutRequest = field(default_factory=LayoutRequest)
    base: str = "e"
    eps: float = DEFAULT_EPS
    sum_tol: float = 1e-3
    renormalize: bool = False
    on_invalid: str = "error"
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    input_format: str | None = None
    worst: int = 0

    def __post_init__(self) -> None:
        """Values from Python as the CLI gives them: base=2 as '2', NumPy numbers as Python's
        (a float32 eps would clip at another value than the signature says)."""
        object.__setattr__(self, "base", base_text(self.base))
        for name in ("eps", "sum_tol"):
            if is_number(getattr(self, name)):
                object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("chunk_rows", "worst"):
            if is_whole(getattr(self, name)):
                object.__setattr__(self, name, int(getattr(self, name)))

    def check(self) -> None:
        if self.base not in UNITS:
            raise UsageError(f"--base {escape_value(self.base)}: expected e, 2 or 10")
        if not (is_number(self.eps) and 0 <= self.eps < 1):
            raise UsageError(f"--eps {escape_value(self.eps)}: expected a number in [0, 1)")
        if not (is_number(self.sum_tol) and self.sum_tol >= 0):
            raise UsageError(f"--sum-tol {escape_value(self.sum_tol)}: expected a number >= 0")
        if not (is_whole(self.chunk_rows) and self.chunk_rows >= 1):
            raise UsageError(f"--chunk-rows {escape_value(self.chunk_rows)}: expected a whole number >= 1")
        if not (is_whole(self.worst) and self.worst >= 0):
            raise UsageError(f"--worst {escape_value(self.worst)}: expected a whole number >= 0")
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise UsageError(f"--input-format {escape_value(self.input_format)}: expected "
                             f"{', '.join(INPUT_FORMATS[:-1])} or {INPUT_FORMATS[-1]}")
        if self.on_invalid not in ("error", "skip"):
            raise UsageError(f"--on-invalid {escape_value(self.on_invalid)}: expected error or skip")
        if self.layout.multilabel and (self.worst or self.renormalize):
            raise UsageError("--multilabel cannot be combined with --worst or --renormalize yet")
        if self.layout.scale not in SCALES:
            raise UsageError(f"--scale {escape_value(self.layout.scale)}: expected "
                             f"{', '.join(SCALES[:-1])} or {SCALES[-1]}")
        if self.renormalize and self.layout.scale != "probs":
            raise UsageError(f"--renormalize divides rows of probabilities by their sum; with --scale "
                             f"{self.layout.scale} there is nothing to renormalize")
        if self.layout.label is not None and self.layout.target is not None:
            raise UsageError("--label and --target both name the targets: give --label COL for hard "
                             "labels or --target COLS for distributions")
        twice = sorted({c for c in self.layout.by if list(self.layout.by).count(c) > 1})
        if twice:
            raise UsageError(f"--by {escape_value(twice[0])} is given more than once",
                             "give each group column once")

    def signature(self) -> str:
        """The settings that change the numbers, sacrebleu-style."""
        weights = "yes" if self.layout.weight else "no"
        return (f"xent:{__version__}|base:{self.base}|eps:{_shortest(self.eps)}|"
                f"scale:{self.layout.scale}|sum_tol:{_shortest(self.sum_tol)}|"
                f"renorm:{'yes' if self.renormalize else 'no'}|weights:{weights}|"
                f"invalid:{self.on_invalid}" + ("|multilabel:yes" if self.layout.multilabel else ""))


INPUT_FORMATS = ("csv", "tsv", "parquet", "arrow", "jsonl")


def _shortest(value: float) -> str:
    """A setting in the signature: two digits where they name it (the default eps, float64's
    machine epsilon, as 2.2e-16), else as many as it takes (0.00104 is not 0.001)."""
    if value == DEFAULT_EPS:
        return "2.2e-16"
    for digits in range(1, 18):
        text = format(value, f".{digits}g")
        if float(text) == value:
            return text
    return repr(value)


def _resolve(source: Source, options: ScoreOptions, schema: pa.Schema | None = None,
             ) -> tuple[Layout, pa.Schema]:
    """The layout of one file; its schema problems are reported with its name."""
    schema = readers.read_schema(source) if schema is None else schema
    if len(schema) and all(pa.types.is_null(f.type) for f in schema) and readers.is_header_only(source):
        raise DataError(f"{source.name}: no data rows (header only)", "the input holds no predictions")
    try:
        return resolve_layout(schema, options.layout), schema
    except DataError as exc:
        raise DataError(f"{source.name}: {exc.message}", exc.hint) from None


def _layout_for(sources: Sequence[Source], options: ScoreOptions) -> tuple[Layout, pa.Schema]:
    layout, schema = _resolve(sources[0], options)
    for other in sources[1:]:
        other_schema = readers.read_schema(other)
        missing = [c for c in layout.columns if c not in other_schema.names]
        if missing:
            raise DataError(f"{other.name} lacks column {escape_value(missing[0])} that "
                            f"{sources[0].name} has", "score files with the same columns together")
        # columns are read by name: the same ones in another order are the same columns
        other_preds = _resolve(other, options, other_schema)[0].pred_columns
        if sorted(other_preds) != sorted(layout.pred_columns):
            raise DataError(f"{other.name} and {sources[0].name} have different prediction columns "
                            f"({', '.join(other_preds)} against {', '.join(layout.pred_columns)})",
                            "score files with the same prediction columns together")
    return layout, schema


def _setup(sources: Sequence[Source], options: ScoreOptions) -> tuple[Layout, pa.Schema, int]:
    """The inputs' layout (class names of a bare list column filled in as 0..K-1), the first
    file's schema, and the class count."""
    layout, schema = _layout_for(sources, options)
    n_classes = _class_count(layout, sources, options)
    if layout.classes is None and layout.pred_is_list:
        layout = replace(layout, classes=tuple(str(k) for k in range(n_classes)))
    return layout, schema, n_classes


def _class_count(layout: Layout, sources: Sequence[Source], options: ScoreOptions) -> int:
    """Classes of a list column without --classes: the length of its first non-null row."""
    if layout.classes is not None:
        return len(layout.classes)
    if layout.binary:
        return 2
    for source in sources:
        for batch in readers.iter_batches(source, layout.pred_columns, {}, options.chunk_rows,
                                          readers.RaggedRows()):
            width = list_width(batch.column(0))
            if width is not None:
                return width
    raise DataError(f"{sources[0].name}: the list column {escape_value(layout.pred_columns[0])} "
                    "has no non-null row", "the input holds no predictions")


def score(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    options: ScoreOptions | None = None,
    stdin: BinaryIO | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    row_sink: RowSink | None = None,
    check_classes: Callable[[Sequence[str]], None] | None = None,
) -> Report:
    """Score prediction files as one stream and return the report.

    ``progress(rows_read, total_rows_or_None)`` is called after every block; ``row_sink`` gets
    every block's valid rows (``xent compare`` collects per-row losses through it);
    ``check_classes(names)`` is called before the first row is read when the class names are
    known from the columns or --classes (the CLI checks its gates with it).

    >>> from xentcli import score
    >>> report = score(["sample_data/animals.csv"])
    >>> round(report.to_dict()["metrics"]["cross_entropy"], 6)
    0.601575
    """
    options = options or ScoreOptions()
    options.check()
    names = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if stdin is not None and isinstance(stdin, io.TextIOBase):
        raise UsageError("stdin: expected a binary stream (bytes), got text",
                         "open the file with 'rb', or pass io.BytesIO(text.encode())")
    with ExitStack() as stack:
        sources = resolve_sources(names, options.input_format, stack, stdin)
        layout, _, n_classes = _setup(sources, options)
        if check_classes is not None and layout.classes is not None:
            check_classes(layout.classes)
        labels = LabelMapper(layout) if layout.label_column else None
        settings = StreamSettings(options.eps, options.sum_tol, options.renormalize,
                                  options.chunk_rows, options.worst)
        run = Run(settings, layout, labels, n_classes, progress=progress, row_sink=row_sink)
        run.total_rows = _known_rows(sources) if progress is not None else None
        for source in sources:
            score_source(run, source)
        return _report(run, options, sources)  # inside: an error may re-read a spooled stdin file


def _known_rows(sources: Sequence[Source]) -> int | None:
    """Total rows from metadata, when every source has it (Parquet, Arrow files)."""
    total = 0
    for source in sources:
        rows = readers.count_rows(source)
        if rows is None:
            return None
        total += rows
    return total


def _quote_as_written(shown: list[tuple[Source, CellProblem]], chunk_rows: int,
                     ) -> list[tuple[Source, CellProblem]]:
    """Text files: quote each bad cell as written (1e400, NaN), not as parsed (inf, nan). Runs
    only on the way to an error, so the extra read costs nothing on the happy path."""
    out = list(shown)
    for source in {s for s, _ in shown if s.format in ("csv", "tsv")}:
        wanted = {(p.row, p.column): i for i, (s, p) in enumerate(shown) if s == source}
        names = set(readers.read_schema(source).names)
        columns = sorted({column for _, column in wanted if column in names})
        if not columns:
            continue
        first_row = 1
        for batch in readers.iter_csv_text(source, columns, chunk_rows):
            for (row, column), i in wanted.items():
                if column in columns and first_row <= row < first_row + batch.num_rows:
                    raw = batch.column(column)[row - first_row].as_py()
                    out[i] = (source, replace(out[i][1], value=escape_value(raw)))
            first_row += batch.num_rows
            if first_row > max(row for row, _ in wanted):
                break
    return out


def _with_lines(shown: list[tuple[Source, CellProblem]]) -> list[tuple[Source, CellProblem]]:
    """Text files: the line each bad row starts on, read from the file (error path only). A
    ragged row's too: pyarrow numbers the rows it refuses by record, not by line, which differ
    once a quoted value spans lines."""
    out = list(shown)
    for source in {s for s, p in shown if p.line is not None}:
        lines = readers.record_lines(source, {p.row for s, p in shown if s == source})
        out = [(s, replace(p, line=lines.get(p.row, p.line)) if s == source else p) for s, p in out]
    return out


def _raise_invalid(run: Run, options: ScoreOptions, sources: Sequence[Source]) -> None:
    """--on-invalid error: the located error, cells quoted as written and rows and lines as in
    the file (this reads text files again; it runs only on the way to the error)."""
    problems = run.tally.problems
    problems.shown = _quote_as_written(problems.shown, options.chunk_rows)
    if run.ragged_rows:
        renumber(run)
    problems.shown = _with_lines(problems.shown)
    raise problems.error({s.name: i for i, s in enumerate(sources)}, run.layout)


def _report(run: Run, options: ScoreOptions, sources: Sequence[Source]) -> Report:
    tally = run.tally
    if tally.problems.count and options.on_invalid == "error":
        _raise_invalid(run, options, sources)
    if run.ragged_rows:
        renumber(run)
    names = ", ".join(s.name for s in sources)
    if tally.rows_read == 0:
        raise DataError(f"{names}: no data rows (empty or header only)", "the input holds no predictions")
    try:
        scores = tally.total.finalize(options.base)
    except DataError as exc:  # the weights' sum: said of these inputs
        raise DataError(f"{names}: {exc.message}", exc.hint) from None
    if scores.rows == 0:
        every = "the only row was" if tally.rows_read == 1 else f"all {tally.rows_read} rows were"
        raise DataError(f"{names}: {every} invalid and skipped; nothing to score",
                        "see rows.skipped_by_reason, or run without --on-invalid skip to see why")
    skipped = tally.rows_read - scores.rows
    by_reason = dict(sorted(tally.problems.by_reason.items()))
    warnings = []
    if skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in by_reason.items())
        warnings.append(f"skipped {skipped} invalid row{'s' if skipped != 1 else ''} ({reasons})")
    return Report(
        xent_version=__version__,
        signature=options.signature(),
        inputs=[s.name for s in sources],
        unit=UNITS[options.base],
        layout=_layout_dict(run.layout, run.classes),
        rows=RowCounts(tally.rows_read, scores.rows, skipped, by_reason, scores.clipped),
        classes=run.classes,
        scores=scores,
        groups=_groups(run, options.base),
        worst=_worst(run, options.base),
        warnings=warnings,
    )


def _groups(run: Run, base: str) -> list[GroupReport]:
    keys = sorted(run.tally.groups, key=group_order)
    finalized = [(key, run.tally.groups[key].finalize(base)) for key in keys]
    return [GroupReport(dict(zip(run.layout.group_columns, key, strict=True)), scores.rows, scores)
            for key, scores in finalized]


def _worst(run: Run, base: str) -> list[WorstRow]:
    """Highest loss first (ties: the earlier row), in the report's unit."""
    unit = unit_factor(base)
    ranked = sorted(run.tally.worst, key=lambda item: (-item[0], -item[1]))
    return [replace(w, cross_entropy=w.cross_entropy / unit) for _, _, w in ranked]


def _layout_dict(layout: Layout, classes: Sequence[str]) -> dict[str, Any]:
    return {
        "target": "label" if layout.label_column else "soft",
        "label_column": layout.label_column,
        "target_columns": list(layout.target_columns) if layout.target_columns else None,
        "pred_columns": list(layout.pred_columns),
        "classes": list(classes),
        "scale": layout.scale,
        "weight_column": layout.weight_column,
        "group_columns": list(layout.group_columns),
    }


def inspect_layout(path: str, options: ScoreOptions) -> tuple[Source, pa.Schema, Layout, int | None]:
    """What ``xent inspect`` shows: the detected layout of one file (or of a directory's Parquet
    files, read as one dataset) and its row count."""
    options.check()
    with ExitStack() as stack:
        sources = resolve_sources([path], options.input_format, stack)
        layout, schema, _ = _setup(sources, options)
        counts = [readers.count_rows(source) for source in sources]
        rows = None if None in counts else sum(cast(list[int], counts))
        if len(sources) == 1:
            return sources[0], schema, layout, rows
        return replace(sources[0], name=f"{path} ({len(sources)} files)"), schema, layout, rows
