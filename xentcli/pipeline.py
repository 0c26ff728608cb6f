"""score(sources, options) -> Report: read → decode → validate → accumulate, one streaming pass."""

from __future__ import annotations

import copy
import heapq
import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, cast

import numpy as np
import pyarrow as pa

from xentcli import __version__
from xentcli.core import validate
from xentcli.core.accumulator import DEFAULT_EPS, UNITS, Accumulator, Scale
from xentcli.core.kernels import LogProbs, row_losses
from xentcli.core.multilabel import MultilabelAccumulator
from xentcli.errors import CellProblem, DataError, InvalidRowsError, UsageError, escape_value, one_of
from xentcli.io import readers
from xentcli.io.decode import Decoded, LabelMapper, decode, list_width
from xentcli.io.layout import Layout, LayoutRequest, resolve_layout
from xentcli.io.sources import Source, resolve_sources
from xentcli.report.model import GroupReport, Report, RowCounts, WorstRow

AnyAccumulator = Accumulator | MultilabelAccumulator
# (chunk, valid rows' indices in the chunk, their 1-based ordinals over all inputs, predictions,
#  valid rows) -> None
RowSink = Callable[["Chunk", np.ndarray, np.ndarray, LogProbs, "Rows"], None]
DEFAULT_CHUNK_ROWS = 65_536
MAX_PROBLEMS_SHOWN = 5
READ_AHEAD = 2
# Decoded chunks live in a ring of buffers. The producer fills buffer j % BUFFERS for chunk j
# only after chunk j-1 was queued, so at most READ_AHEAD chunks wait in the queue and one is being
# scored: the buffer of chunk j - BUFFERS is free by then.
BUFFERS = READ_AHEAD + 2
# Arrow decodes best in large batches, NumPy computes best on blocks that stay in the CPU cache
# across the dozen passes the math makes: each decoded chunk is scored in blocks of this many rows.
MATH_BLOCK_ROWS = 16384
CHUNK_VALUES = 1 << 21  # at most this many predictions (16 MiB as float64) in one decoded chunk


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

    def check(self) -> None:
        if self.base not in UNITS:
            raise UsageError(f"--base {escape_value(self.base)}: expected e, 2 or 10")
        if not (self.eps >= 0 and math.isfinite(self.eps) and self.eps < 1):
            raise UsageError(f"--eps {self.eps}: expected a number in [0, 1)")
        if not (self.sum_tol >= 0 and math.isfinite(self.sum_tol)):
            raise UsageError(f"--sum-tol {self.sum_tol}: expected a number >= 0")
        if self.chunk_rows < 1:
            raise UsageError(f"--chunk-rows {self.chunk_rows}: expected a positive number")
        if self.on_invalid not in ("error", "skip"):
            raise UsageError(f"--on-invalid {escape_value(self.on_invalid)}: expected error or skip")
        if self.layout.multilabel and (self.worst or self.renormalize):
            raise UsageError("--multilabel cannot be combined with --worst or --renormalize yet")
        if self.layout.scale not in ("probs", "logits", "logprobs"):
            raise UsageError(f"--scale {escape_value(self.layout.scale)}: expected probs, logits "
                             "or logprobs")

    def signature(self) -> str:
        """The settings that change the numbers, sacrebleu-style."""
        weights = "yes" if self.layout.weight else "no"
        return (f"xent:{__version__}|base:{self.base}|eps:{format(self.eps, '.2g')}|"
                f"scale:{self.layout.scale}|sum_tol:{format(self.sum_tol, 'g')}|"
                f"renorm:{'yes' if self.renormalize else 'no'}|weights:{weights}|"
                f"invalid:{self.on_invalid}" + ("|multilabel:yes" if self.layout.multilabel else ""))


@dataclass
class Problems:
    """Invalid rows seen so far: counts by reason and the first few, located."""

    count: int = 0
    shown: list[tuple[Source, CellProblem]] = field(default_factory=list)
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, counts: dict[str, int]) -> None:
        for reason, n in counts.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + n
            self.count += n

    def error(self) -> InvalidRowsError:
        files = list(dict.fromkeys(s.name for s, _ in self.shown))
        problems = [p for _, p in self.shown]
        if len(files) > 1:
            problems = [replace(p, file=s.name) for s, p in self.shown]
        hint = _hint(self.shown[0][1].reason)
        return InvalidRowsError(", ".join(files), problems, self.count, hint, dict(self.by_reason))


def _hint(reason: str) -> str:
    hints = {
        "sum_off": "fix the model's output, raise --sum-tol, or pass --renormalize",
        "unknown_label": "check the class names (xent inspect FILE), or pass --classes",
        "ragged_row": "check the quoting and delimiter of that line",
    }
    return hints.get(reason, "fix the file, or pass --on-invalid skip to drop and count such rows")


@dataclass
class Chunk:
    """A decoded batch with where it came from."""

    source: Source
    first_row: int  # 1-based data row of the batch's first row, within its file
    batch: pa.RecordBatch
    decoded: Decoded


@dataclass
class Run:
    """The mutable state of one scoring pass."""

    options: ScoreOptions
    layout: Layout
    labels: LabelMapper | None
    n_classes: int
    total: AnyAccumulator
    problems: Problems = field(default_factory=Problems)
    rows_read: int = 0
    groups: dict[tuple[str, ...], AnyAccumulator] = field(default_factory=dict)
    worst: list[tuple[float, int, WorstRow]] = field(default_factory=list)
    seq: int = 0
    progress: Callable[[int, int | None], None] | None = None
    total_rows: int | None = None  # for the progress bar, when metadata knows it
    row_sink: RowSink | None = None
    ragged_rows: dict[str, list[int]] = field(default_factory=dict)  # file → data rows dropped

    @property
    def chunk_rows(self) -> int:
        """--chunk-rows, lowered for very wide files so that a chunk stays near CHUNK_VALUES."""
        return max(1, min(self.options.chunk_rows, CHUNK_VALUES // max(self.n_classes, 1)))

    def new_accumulator(self) -> AnyAccumulator:
        scale = cast(Scale, self.layout.scale)
        if self.layout.multilabel:
            return MultilabelAccumulator(self.n_classes, self.options.eps, scale)
        return Accumulator(self.n_classes, self.options.eps, scale)


def _read_ahead(items: Iterator[Chunk]) -> Iterator[Chunk]:
    """Run the producer (file reads and Arrow → NumPy decoding) on a thread, READ_AHEAD chunks
    ahead, so that decoding and the math overlap on two cores."""
    buffer: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(("item", item))
            buffer.put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            buffer.put(("error", exc))

    thread = threading.Thread(target=produce, name="xent-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, payload = buffer.get()
            if kind == "item":
                yield payload
            elif kind == "error":
                raise payload
            else:
                return
    finally:
        stop.set()
        while thread.is_alive():
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _file_chunks(run: Run, source: Source, text_mode: bool, ragged: readers.RaggedRows) -> Iterator[Chunk]:
    layout = run.layout
    if text_mode:
        batches = readers.iter_csv_text(source, layout.columns, run.chunk_rows, ragged)
    else:
        batches = readers.iter_batches(source, layout.columns, layout.csv_types(),
                                       run.chunk_rows, ragged, layout.key_columns)
    first_row = 1
    ring = [np.empty((len(layout.pred_columns), run.chunk_rows)) for _ in range(BUFFERS)]
    for j, batch in enumerate(batches):
        decoded = decode(batch, layout, run.n_classes, run.labels, ring[j % BUFFERS])
        for start in range(0, batch.num_rows, MATH_BLOCK_ROWS):
            stop = min(start + MATH_BLOCK_ROWS, batch.num_rows)
            yield Chunk(source, first_row + start, batch.slice(start, stop - start),
                        decoded.rows(start, stop))
        first_row += batch.num_rows


@dataclass
class Rows:
    """The valid rows of a chunk as the core wants them (class-major)."""

    preds: np.ndarray
    labels: np.ndarray | None
    targets: np.ndarray | None
    weights: np.ndarray | None

    def subset(self, mask: np.ndarray) -> Rows:
        return Rows(self.preds[:, mask], None if self.labels is None else self.labels[mask],
                    None if self.targets is None else self.targets[:, mask],
                    None if self.weights is None else self.weights[mask])


def _accumulate(acc: AnyAccumulator, rows: Rows) -> LogProbs | None:
    """Add rows to an accumulator; returns the predictions' logs (None for multilabel)."""
    if isinstance(acc, MultilabelAccumulator):
        assert rows.targets is not None
        acc.update_columns(rows.preds, rows.targets, rows.weights)
        return None
    pred = acc.log_probs(rows.preds)
    acc.update_class_major(pred, rows.labels, rows.targets, rows.weights)
    return pred


def _score_chunk(run: Run, chunk: Chunk, acc: AnyAccumulator) -> None:
    # every non-finite value is found and reported by validation: NumPy need not warn about it
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        _score_valid_rows(run, chunk, acc)


def _score_valid_rows(run: Run, chunk: Chunk, acc: AnyAccumulator) -> None:
    d = chunk.decoded
    first_ordinal = run.rows_read + 1  # of the chunk's first row, counted over all inputs
    run.rows_read += chunk.batch.num_rows
    tol = validate.Tolerance(run.options.sum_tol, run.options.renormalize, not run.layout.multilabel)
    codes = validate.check_rows(d.preds, d.pred_nulls, run.layout.scale == "probs", d.labels,
                                d.targets, d.target_nulls, d.weights, d.weight_nulls, tol)
    if d.forced is not None:
        codes = d.forced if codes is None else np.where(d.forced != 0, d.forced, codes)
    rows = Rows(d.preds, d.labels, d.targets, d.weights)
    keep: np.ndarray | None = None
    if codes is not None and codes.any():
        _record_problems(run, chunk, codes)
        keep = codes == 0
        rows = rows.subset(keep)
    if run.options.renormalize and run.layout.scale == "probs":
        rows.preds = rows.preds / rows.preds.sum(axis=0)
    pred = _accumulate(acc, rows)
    if run.layout.group_columns:
        _update_groups(run, chunk, keep, rows)
    if run.options.worst > 0 and pred is not None:
        _update_worst(run, chunk, keep, pred, rows.labels, rows.targets)
    if run.row_sink is not None and pred is not None:
        local = np.arange(chunk.batch.num_rows) if keep is None else np.flatnonzero(keep)
        run.row_sink(chunk, local, first_ordinal + local, pred, rows)
    if run.progress is not None:
        run.progress(run.rows_read, run.total_rows)


def _record_problems(run: Run, chunk: Chunk, codes: validate.Codes) -> None:
    run.problems.add(validate.reason_counts(codes))
    room = MAX_PROBLEMS_SHOWN - len(run.problems.shown)
    for row in np.flatnonzero(codes)[: max(room, 0)]:
        problem = describe_problem(run.layout, chunk, int(row), int(codes[row]), run.options.renormalize)
        run.problems.shown.append((chunk.source, problem))


def _cell_text(batch: pa.RecordBatch, column: str, row: int) -> str:
    value = batch.column(column)[row].as_py()
    return "null" if value is None else escape_value(value if isinstance(value, str) else repr(value))


def _as_number(value: Any) -> float | None:
    """A cell as the reader parses numbers (Arrow's rules, not Python's float(), which also takes
    '1_0' and other digits); None when it is not a number."""
    if not isinstance(value, str):
        return float(value)
    try:
        return float(pa.array([value]).cast(pa.float64())[0].as_py())
    except (pa.ArrowInvalid, TypeError):
        return None


def _bad_cell(code: int, value: Any, top: float) -> bool:
    """Does this raw cell explain reason ``code``?"""
    if code == validate.NULL:
        return value is None
    if value is None or code not in (validate.NOT_A_NUMBER, validate.NOT_FINITE, validate.OUT_OF_RANGE):
        return False
    number = _as_number(value)
    if number is None:
        return code == validate.NOT_A_NUMBER
    if code == validate.NOT_FINITE:
        return not math.isfinite(number)
    return code == validate.OUT_OF_RANGE and not 0 <= number <= top


def describe_problem(layout: Layout, chunk: Chunk, row: int, code: int, renormalize: bool = False,
                     ) -> CellProblem:
    """Locate a bad row's reason in a column and quote the cell as it was in the file."""
    reason, expected = validate.REASONS[code]
    top = validate.top_value(validate.Tolerance(renormalize=renormalize))
    if code == validate.OUT_OF_RANGE and renormalize:
        expected = "a finite score >= 0 (rows are renormalized)"
    file_row = chunk.first_row + row
    line = file_row + 1 if chunk.source.format in ("csv", "tsv") else None
    batch = chunk.batch
    if code in (validate.MISSING_LABEL, validate.UNKNOWN_LABEL) and layout.label_column:
        column = layout.label_column
        if code == validate.UNKNOWN_LABEL and layout.classes:
            more = ", ..." if len(layout.classes) > 10 else ""
            expected = f"one of the classes ({one_of(layout.classes[:10])}{more})"
    elif code == validate.INVALID_WEIGHT and layout.weight_column:
        column = layout.weight_column
    else:
        candidates = [*layout.pred_columns, *(layout.target_columns or ())]
        column = next((c for c in candidates if not layout.pred_is_list
                       and _bad_cell(code, batch.column(c)[row].as_py(), top)), candidates[0])
        if code == validate.SUM_OFF:
            total = float(chunk.decoded.preds[:, row].sum()) if not layout.binary else math.nan
            column = ",".join(layout.pred_columns) if len(layout.pred_columns) < 6 else column
            return CellProblem(file_row, column, f"sum {total!r}", reason,
                               "a row sum within --sum-tol of 1", line)
    return CellProblem(file_row, column, _cell_text(batch, column, row), reason, expected, line)


def _group_keys(run: Run, chunk: Chunk) -> np.ndarray:
    """One key per row: the group columns' values as text, joined by a unit separator."""
    texts = [[_group_text(v) for v in chunk.batch.column(name).to_pylist()]
             for name in run.layout.group_columns]
    return np.array(["\x1f".join(parts) for parts in zip(*texts, strict=True)], dtype=object)


def _update_groups(run: Run, chunk: Chunk, keep: np.ndarray | None, rows: Rows) -> None:
    """Split a chunk's valid rows by group and add each part to its group's accumulator."""
    keys = _group_keys(run, chunk)
    if keep is not None:
        keys = keys[keep]
    for key in dict.fromkeys(keys.tolist()):
        group = tuple(key.split("\x1f"))
        if group not in run.groups:
            run.groups[group] = run.new_accumulator()
        _accumulate(run.groups[group], rows.subset(keys == key))


def _group_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _update_worst(run: Run, chunk: Chunk, keep: np.ndarray | None, pred: Any,
                  labels: Any, targets: Any) -> None:
    """Streaming top-N by loss: the chunk's N worst, merged into a heap of N."""
    losses = row_losses(pred, labels, targets)
    rows = np.arange(chunk.batch.num_rows) if keep is None else np.flatnonzero(keep)
    n = run.options.worst
    order = np.argsort(-losses, kind="stable")[:n] if losses.size > n else np.argsort(-losses, kind="stable")
    id_column = chunk.batch.column(run.layout.id_column) if run.layout.id_column else None
    classes = run.labels.final_classes() if run.labels else []
    for i in order:
        loss = float(losses[i])
        if len(run.worst) == n and loss <= run.worst[0][0]:
            break
        row = int(rows[i])
        true_class = int(labels[i]) if labels is not None else int(np.argmax(targets[:, i]))
        label = classes[true_class] if classes else str(true_class)
        entry = WorstRow(chunk.source.name, chunk.first_row + row,
                         None if id_column is None else _group_text(id_column[row].as_py()),
                         label, float(pred.probs[true_class, i]), loss)
        run.seq += 1
        item = (loss, -run.seq, entry)
        if len(run.worst) < n:
            heapq.heappush(run.worst, item)
        else:
            heapq.heapreplace(run.worst, item)


def _score_source(run: Run, source: Source) -> None:
    """Score one file into ``run``; a CSV whose cells pyarrow refused is re-read as text so that
    every bad cell is located and handled like any other invalid value."""
    for text_mode in (False, True):
        acc = run.new_accumulator()
        saved = copy.deepcopy((run.rows_read, run.problems, run.groups, run.worst, run.seq))
        ragged = readers.RaggedRows()
        try:
            for chunk in _read_ahead(_file_chunks(run, source, text_mode, ragged)):
                _score_chunk(run, chunk, acc)
        except pa.ArrowInvalid as exc:
            if text_mode or source.format not in ("csv", "tsv") or "conversion error" not in str(exc):
                raise readers.unreadable(source, exc) from exc
            run.rows_read, run.problems, run.groups, run.worst, run.seq = saved
            continue
        except (pa.ArrowException, OSError) as exc:
            raise readers.unreadable(source, exc) from exc
        _add_ragged(run, source, ragged)
        run.total = _merged(run.total, acc)
        return


def _merged(total: AnyAccumulator, part: AnyAccumulator) -> AnyAccumulator:
    if isinstance(total, MultilabelAccumulator) and isinstance(part, MultilabelAccumulator):
        return total.merge(part)
    if isinstance(total, Accumulator) and isinstance(part, Accumulator):
        return total.merge(part)
    raise TypeError("cannot merge accumulators of different kinds")


def true_row(row: int, dropped: Sequence[int]) -> int:
    """The file's data row of the ``row``-th row that survived parsing, given the sorted data
    rows that the parser ``dropped``."""
    for gone in dropped:
        if gone <= row:
            row += 1
        else:
            break
    return row


def _renumber(run: Run) -> None:
    """Problems and worst rows of files with ragged rows: back to the file's own row numbers."""
    def fix(source_name: str, row: int) -> int:
        return true_row(row, run.ragged_rows.get(source_name, ()))

    run.problems.shown = [(s, p if p.reason == "ragged_row" else replace(
        p, row=fix(s.name, p.row), line=None if p.line is None else fix(s.name, p.row) + 1))
        for s, p in run.problems.shown]
    run.worst = [(loss, seq, replace(w, row=fix(w.file, w.row))) for loss, seq, w in run.worst]


def _add_ragged(run: Run, source: Source, ragged: readers.RaggedRows) -> None:
    if not ragged.count:
        return
    run.problems.add({"ragged_row": ragged.count})
    run.rows_read += ragged.count
    if not ragged.located:
        ragged = readers.locate_ragged(source)
    # pyarrow drops a ragged row, so later rows arrive numbered one lower: remember where they were
    run.ragged_rows[source.name] = sorted(line - 1 for line in ragged.lines if line is not None)
    for line, want, got, text in ragged.rows[: MAX_PROBLEMS_SHOWN - len(run.problems.shown)]:
        row = line - 1 if line is not None else 0
        problem = CellProblem(row, "(whole row)", escape_value(text), "ragged_row",
                              f"{want} fields, got {got}", line)
        run.problems.shown.append((source, problem))


def _resolve(source: Source, options: ScoreOptions) -> tuple[Layout, pa.Schema]:
    """The layout of one file; its schema problems are reported with its name."""
    schema = readers.read_schema(source)
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
        if _resolve(other, options)[0].pred_columns != layout.pred_columns:
            raise DataError(f"{other.name} and {sources[0].name} have different prediction columns",
                            "score files with the same schema together")
    return layout, schema


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
    paths: Sequence[str],
    options: ScoreOptions | None = None,
    stdin: BinaryIO | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    row_sink: RowSink | None = None,
) -> Report:
    """Score prediction files as one stream and return the report.

    ``progress(rows_read, total_rows_or_None)`` is called after every block; ``row_sink`` gets
    every block's valid rows (``xent compare`` collects per-row losses through it).

    >>> from xentcli import score
    >>> report = score(["sample_data/animals.csv"])
    >>> round(report.to_dict()["metrics"]["cross_entropy"], 6)
    0.601575
    """
    options = options or ScoreOptions()
    options.check()
    with ExitStack() as stack:
        sources = resolve_sources(paths, options.input_format, stack, stdin)
        layout, _ = _layout_for(sources, options)
        n_classes = _class_count(layout, sources, options)
        if layout.classes is None and layout.pred_is_list:
            layout = _with_classes(layout, tuple(str(k) for k in range(n_classes)))
        labels = LabelMapper(layout) if layout.label_column else None
        run = Run(options, layout, labels, n_classes, Accumulator(1))
        run.total = run.new_accumulator()
        run.progress = progress
        run.row_sink = row_sink
        run.total_rows = _known_rows(sources) if progress is not None else None
        for source in sources:
            _score_source(run, source)
        return _report(run, sources)  # inside: an error may re-read a spooled stdin file


def _known_rows(sources: Sequence[Source]) -> int | None:
    """Total rows from metadata, when every source has it (Parquet, Arrow files)."""
    total = 0
    for source in sources:
        rows = readers.count_rows(source)
        if rows is None:
            return None
        total += rows
    return total


def _with_classes(layout: Layout, classes: tuple[str, ...]) -> Layout:
    return replace(layout, classes=classes)


def _quote_as_written(shown: list[tuple[Source, CellProblem]], chunk_rows: int,
                     ) -> list[tuple[Source, CellProblem]]:
    """Text files: quote each bad cell as written (1e400, NaN), not as parsed (inf, nan). Runs
    only on the way to an error, so the extra read costs nothing on the happy path."""
    out = list(shown)
    for source in {s for s, _ in shown if s.format in ("csv", "tsv")}:
        wanted = {(p.row, p.column): i for i, (s, p) in enumerate(shown) if s == source}
        columns = sorted({column for _, column in wanted if column in readers.read_schema(source).names})
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
    """Text files: the line each bad row starts on, read from the file (error path only)."""
    out = list(shown)
    for source in {s for s, p in shown if p.line is not None and p.reason != "ragged_row"}:
        lines = readers.record_lines(source, {p.row for s, p in shown if s == source})
        out = [(s, replace(p, line=lines.get(p.row, p.line)) if s == source
                and p.reason != "ragged_row" else p) for s, p in out]
    return out


def _report(run: Run, sources: Sequence[Source]) -> Report:
    if run.problems.count and run.options.on_invalid == "error":
        run.problems.shown = _quote_as_written(run.problems.shown, run.options.chunk_rows)
        if run.ragged_rows:
            _renumber(run)
        run.problems.shown = _with_lines(run.problems.shown)
        order = {s.name: i for i, s in enumerate(sources)}
        run.problems.shown.sort(key=lambda item: (order.get(item[0].name, 0), item[1].row))
        raise run.problems.error()
    if run.ragged_rows:
        _renumber(run)
    if run.rows_read == 0:
        raise DataError(f"{', '.join(s.name for s in sources)}: no data rows (empty or header only)",
                        "the input holds no predictions to score")
    scores = run.total.finalize(run.options.base)
    if scores.rows == 0:
        raise DataError(f"{', '.join(s.name for s in sources)}: all {run.rows_read} rows were invalid "
                        "and skipped; nothing to score",
                        "see rows.skipped_by_reason, or run without --on-invalid skip to see why")
    classes = run.labels.final_classes() if run.labels else list(run.layout.classes or ())
    group_scores = [(key, acc.finalize(run.options.base)) for key, acc in sorted(run.groups.items())]
    groups = [GroupReport(dict(zip(run.layout.group_columns, key, strict=True)), sc.rows, sc)
              for key, sc in group_scores]
    worst = [w for _, _, w in sorted(run.worst, key=lambda t: (-t[0], -t[1]))]
    unit_scale = 1.0 if run.options.base == "e" else math.log(float(run.options.base))
    worst = [WorstRow(w.file, w.row, w.id, w.label, w.p_true, w.cross_entropy / unit_scale) for w in worst]
    skipped = run.rows_read - scores.rows
    warnings = []
    if skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(run.problems.by_reason.items()))
        warnings.append(f"skipped {skipped} invalid row{'s' if skipped != 1 else ''} ({reasons})")
    return Report(
        xent_version=__version__,
        signature=run.options.signature(),
        inputs=[s.name for s in sources],
        unit=UNITS[run.options.base],
        layout=_layout_dict(run.layout, classes),
        rows=RowCounts(run.rows_read, scores.rows, skipped, dict(sorted(run.problems.by_reason.items())),
                       scores.clipped),
        classes=classes,
        scores=scores,
        groups=groups,
        worst=worst,
        warnings=warnings,
    )


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
    """What ``xent inspect`` shows: the detected layout of one file and its row count."""
    options.check()
    with ExitStack() as stack:
        source = resolve_sources([path], options.input_format, stack)[0]
        schema = readers.read_schema(source)
        layout = resolve_layout(schema, options.layout)
        n_classes = _class_count(layout, [source], options)
        if layout.classes is None and layout.pred_is_list:
            layout = _with_classes(layout, tuple(str(k) for k in range(n_classes)))
        return source, schema, layout, readers.count_rows(source)
