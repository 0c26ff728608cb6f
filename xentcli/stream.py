"""The streaming pass: read → decode (on a reader thread, except for pyarrow's streaming CSV
reader, see ``readers.streams_csv``) → validate → accumulate, block by block.

A pass over one file fills a fresh :class:`Tally`; only a pass that completes is merged into the
run, so a CSV re-read as text after pyarrow refused a cell starts from nothing and nothing is
counted twice.
"""

from __future__ import annotations

import heapq
import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from xentcli.core import validate
from xentcli.core.accumulator import Accumulator, GroupKey, GroupTable, Scale
from xentcli.core.kernels import (
    HardRows,
    LogProbs,
    grouped_hard_label_stats,
    hard_label_rows,
    row_losses,
)
from xentcli.core.multilabel import MultilabelAccumulator
from xentcli.errors import CellProblem, InvalidRowsError, escape_value, one_of
from xentcli.io import readers
from xentcli.io.decode import Decoded, LabelMapper, decode, ints_or
from xentcli.io.layout import Layout, class_namings
from xentcli.io.sources import Source
from xentcli.report.model import WorstRow

AnyAccumulator = Accumulator | MultilabelAccumulator
Index = npt.NDArray[np.intp]


class RowSink(Protocol):
    """Takes per-row values of every block's valid rows (``xent compare`` keeps row losses)."""

    def extract(self, chunk: Chunk, local: Index, ordinals: Index, pred: LogProbs, rows: Rows) -> Any:
        """What to keep of a block's valid rows (``local``: their indices in the block,
        ``ordinals``: their 1-based numbers over all inputs). Called while the block is scored:
        its arrays live in reused buffers and are overwritten later."""

    def commit(self, part: Any) -> None:
        """Keep a part, once the pass over its file has succeeded."""

MAX_PROBLEMS_SHOWN = 5
# Blocks decoded ahead of the scorer: enough to ride out the reader's slower moments (the start
# of a row group). 10M rows: 2 was ~0.02 s slower, 3 to 12 alike.
READ_AHEAD = 6
# Chunks whose predictions cannot stay Arrow columns until scored (integers, nulls, text, lists)
# are decoded into a ring of buffers. The producer fills buffer j % BUFFERS for chunk j only
# after the blocks of chunk j-1 were queued; at most READ_AHEAD blocks wait in the queue and one
# is being scored, so the chunk that last used the buffer is done with by then.
BUFFERS = READ_AHEAD + 2
# Arrow decodes best in large batches, NumPy computes best on blocks that stay in the CPU cache
# across the dozen passes the math makes: each decoded chunk is scored in blocks of this many rows.
MATH_BLOCK_ROWS = 32768
CHUNK_VALUES = 1 << 21  # at most this many predictions (16 MiB as float64) in one decoded chunk


@dataclass(frozen=True)
class StreamSettings:
    """What the streaming pass needs from the run's options."""

    eps: float
    sum_tol: float
    renormalize: bool
    chunk_rows: int
    worst: int


@dataclass
class Chunk:
    """A decoded block of rows with where it came from."""

    source: Source
    first_row: int  # 1-based data row of the block's first row, within its file
    batch: pa.RecordBatch
    decoded: Decoded
    codes: validate.Codes | None = None  # why each row is invalid (0: valid); None: all valid
    # (min, max) of the block's probabilities, found by validation; None for other scales
    bounds: tuple[float, float] | None = None

    @property
    def low(self) -> float | None:
        """A lower bound of the block's probabilities (None: not known)."""
        return None if self.bounds is None else self.bounds[0]


@dataclass
class Rows:
    """The valid rows of a block as the core wants them (class-major)."""

    preds: npt.NDArray[np.float64]
    labels: Index | None
    targets: npt.NDArray[np.float64] | None
    weights: npt.NDArray[np.float64] | None

    def subset(self, rows: npt.NDArray[Any]) -> Rows:
        """Some of the rows (a mask or indices)."""
        return Rows(self.preds[:, rows], None if self.labels is None else self.labels[rows],
                    None if self.targets is None else self.targets[:, rows],
                    None if self.weights is None else self.weights[rows])


@dataclass
class Problems:
    """Invalid rows: counts by reason and the lowest-numbered few, located."""

    by_reason: dict[str, int] = field(default_factory=dict)
    shown: list[tuple[Source, CellProblem]] = field(default_factory=list)
    files: set[str] = field(default_factory=set)  # the inputs that have any

    @property
    def count(self) -> int:
        return sum(self.by_reason.values())

    def add(self, counts: dict[str, int], source: Source) -> None:
        self._count(counts)
        self.files.add(source.name)

    def merge(self, other: Problems) -> None:
        self._count(other.by_reason)
        self.shown.extend(other.shown)
        self.files |= other.files

    def _count(self, counts: dict[str, int]) -> None:
        for reason, n in counts.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + n

    def error(self, file_order: dict[str, int], layout: Layout) -> InvalidRowsError:
        """The error for the first few problems in file and row order."""
        shown = sorted(self.shown, key=lambda item: (file_order.get(item[0].name, 0), item[1].row))
        shown = shown[:MAX_PROBLEMS_SHOWN]
        files = list(dict.fromkeys(s.name for s, _ in shown))
        several = len(self.files) > 1  # the count spans them all, shown or not
        problems = [replace(p, file=s.name) if several else p for s, p in shown]
        return InvalidRowsError(", ".join(files), problems, self.count, _hint(shown[0][1], layout),
                                dict(self.by_reason), len(self.files))


SKIP_HINT = "fix the file, or pass --on-invalid skip to drop and count such rows"


def _hint(problem: CellProblem, layout: Layout) -> str:
    """What to do about the first problem shown (the flags that can help, never one already given)."""
    if problem.hint is not None:
        return problem.hint
    if problem.reason == "sum_off":
        return "fix the model's output, raise --sum-tol, or pass --renormalize"
    if problem.reason == "unknown_label":
        return _label_hint(problem.value, layout)
    if problem.reason == "ragged_row":
        return "check the quoting and delimiter of that line"
    if problem.reason == "out_of_range" and layout.scale == "probs" and any(
            "logit" in c.lower() for c in layout.pred_columns):
        return "for logits, pass --scale logits; or " + SKIP_HINT
    return SKIP_HINT


def _label_hint(value: str, layout: Layout) -> str:
    """An unknown label (``value`` as quoted in the message): the flag that would make it known."""
    if layout.binary and layout.positive is None:
        return ("with one prediction column the labels are 0/1 or true/false; for other values, "
                "name the positive one with --positive VALUE")
    if layout.binary:
        return "a binary file has two label values: --positive and one other"
    if layout.positional_labels:
        return ("a label column holds either class names or class positions, not both; "
                "write the labels one way")
    if not layout.pred_is_list and len(layout.pred_columns) > 1:
        for naming in class_namings(layout.pred_columns)[1:]:
            if value in {escape_value(name) for name in naming}:
                return f"the labels name the columns another way: pass --classes {','.join(naming)}"
    return "check the class names (xent inspect FILE), or pass --classes"


def _line(source: Source, row: int) -> int | None:
    """A text file's line of a data row, as it would be in a simple file (the header first for
    CSV); the pipeline reads the true one from the file on the way to an error."""
    return row + 1 if source.format in ("csv", "tsv") else row if source.format == "jsonl" else None


def _column_label(columns: Sequence[str]) -> str:
    """How a message names a row of several columns: all of them, or the first of many."""
    return ",".join(columns) if len(columns) < 6 else columns[0]


@dataclass
class Tally:
    """Everything a pass accumulates; one per file pass, merged into the run's when it succeeds."""

    total: AnyAccumulator
    groups: dict[GroupKey, AnyAccumulator] = field(default_factory=dict)
    group_table: GroupTable | None = None  # groups' hard-label sums, moved to ``groups`` at merge
    worst: list[tuple[float, int, WorstRow]] = field(default_factory=list)  # heap of (loss, -ordinal)
    problems: Problems = field(default_factory=Problems)
    rows_read: int = 0
    sink_parts: list[Any] = field(default_factory=list)  # committed when the pass succeeds


@dataclass
class Run:
    """A scoring pass over all inputs."""

    settings: StreamSettings
    layout: Layout
    labels: LabelMapper | None
    n_classes: int
    tally: Tally = field(init=False)
    progress: Callable[[int, int | None], None] | None = None
    total_rows: int | None = None  # for the progress bar, when metadata knows it
    row_sink: RowSink | None = None
    ragged_rows: dict[str, list[int]] = field(default_factory=dict)  # file → data rows dropped
    _scratch: npt.NDArray[np.float64] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.tally = Tally(self.new_accumulator())

    def scratch(self) -> npt.NDArray[np.float64]:
        """The scoring thread's float64 block (classes, rows of the largest block), reused for
        every block (see :meth:`Decoded.materialize`)."""
        if self._scratch is None:
            rows = min(MATH_BLOCK_ROWS, self.chunk_rows)
            self._scratch = np.empty((len(self.layout.pred_columns), rows))
        return self._scratch

    @property
    def chunk_rows(self) -> int:
        """--chunk-rows, lowered for very wide files so that a chunk stays near CHUNK_VALUES."""
        return max(1, min(self.settings.chunk_rows, CHUNK_VALUES // max(self.n_classes, 1)))

    def new_accumulator(self) -> AnyAccumulator:
        scale = cast(Scale, self.layout.scale)
        if self.layout.multilabel:
            return MultilabelAccumulator(self.n_classes, self.settings.eps, scale)
        return Accumulator(self.n_classes, self.settings.eps, scale)

    @property
    def classes(self) -> list[str]:
        return self.labels.final_classes() if self.labels else list(self.layout.classes or ())


def _read_ahead(items: Iterator[Chunk]) -> Iterator[Chunk]:
    """Run the producer (file reads and Arrow → NumPy decoding) on a thread, READ_AHEAD blocks
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


def _file_chunks(run: Run, source: Source, mode: str, ragged: readers.RaggedRows) -> Iterator[Chunk]:
    """The file's blocks, decoded; ``mode``: "fast" (a large CSV in ranges), "serial" or "text"
    (see :func:`score_source`)."""
    layout = run.layout
    if mode == "text":
        batches = readers.iter_csv_text(source, layout.columns, run.chunk_rows, ragged)
    else:
        batches = readers.iter_batches(source, layout.columns, layout.csv_types(), run.chunk_rows,
                                       ragged, layout.key_columns, serially=mode == "serial")
    first_row = 1
    ring = [np.empty((len(layout.pred_columns), run.chunk_rows)) for _ in range(BUFFERS)]
    for j, batch in enumerate(batches):
        decoded = decode(batch, layout, run.n_classes, run.labels, ring[j % BUFFERS], defer=True)
        for start in range(0, batch.num_rows, MATH_BLOCK_ROWS):
            stop = min(start + MATH_BLOCK_ROWS, batch.num_rows)
            yield Chunk(source, first_row + start, batch.slice(start, stop - start),
                        decoded.rows(start, stop))
        first_row += batch.num_rows


def _validate(run: Run, chunk: Chunk) -> None:
    """Why each row of a block is invalid, found just before the block is scored (under
    :func:`_score_chunk`'s errstate), and the bounds of its probabilities for the scorer.

    The bounds are a min and a max of the float64 block, which is in the CPU's cache here. The
    reader thread used to find them from the columns' bits, a batch at a time, at more CPU
    (paired medians of in-process runs: 10M Parquet rows, reader −22 ms and scoring +14.5 ms,
    the pass alike; 2M CSV rows, where both cores are busy parsing, the pass −4 ms)."""
    settings = run.settings
    d = chunk.decoded
    tol = validate.Tolerance(settings.sum_tol, settings.renormalize, not run.layout.multilabel)
    if run.layout.scale == "probs" and d.preds.size:
        chunk.bounds = (float(d.preds.min()), float(d.preds.max()))
    codes = validate.check_rows(d.preds, d.pred_nulls, run.layout.scale, d.labels, d.targets,
                                d.target_nulls, d.weights, d.weight_nulls, tol, chunk.bounds)
    chunk.codes = validate.overlay_forced(codes, d.forced)


def score_source(run: Run, source: Source) -> None:
    """Score one file into ``run``. A CSV whose cells pyarrow refused is read again as text, so
    that every bad cell is located and handled like any other invalid value. A large CSV read
    in ranges is read again serially when a range does not parse, or when its ranges had rows
    with the wrong number of fields that a serial parse does not find: a range was cut inside a
    quoted value that spans lines (both halves of such a row have the wrong number of fields)."""
    mode = "fast"
    while True:
        tally = Tally(run.new_accumulator())
        ragged = readers.RaggedRows()
        # pyarrow's streaming CSV reader reads ahead on its own threads, and must not be
        # iterated from ours (see readers.streams_csv)
        streams = readers.streams_csv(source, serially=mode != "fast")
        in_ranges = source.format in ("csv", "tsv") and not streams
        try:
            chunks = _file_chunks(run, source, mode, ragged)
            for chunk in chunks if streams else _read_ahead(chunks):
                _score_chunk(run, tally, chunk)
        except pa.ArrowInvalid as exc:
            if source.format in ("csv", "tsv") and mode != "text" and "conversion error" in str(exc):
                mode = "text"
                continue
            if in_ranges:
                mode = "serial"  # which reads the file, or says where it cannot
                continue
            raise readers.unreadable(source, exc) from exc
        except (pa.ArrowException, OSError) as exc:
            raise readers.unreadable(source, exc) from exc
        if ragged.count and not ragged.located:
            located = readers.locate_ragged(source)
            if located.count != ragged.count:
                mode = "serial"
                continue
            ragged = located
        _add_ragged(run, tally, source, ragged)
        _merge_tally(run, tally)
        return


def _merge_tally(run: Run, part: Tally) -> None:
    total = run.tally
    total.total = _merged(total.total, part.total)
    if part.group_table is not None:
        for key, summed in part.group_table.accumulators().items():
            part.groups[key] = _merged(part.groups[key], summed) if key in part.groups else summed
    for key, acc in part.groups.items():
        total.groups[key] = _merged(total.groups[key], acc) if key in total.groups else acc
    for item in part.worst:
        _push_worst(total.worst, item, run.settings.worst)
    total.problems.merge(part.problems)
    total.rows_read += part.rows_read
    if run.row_sink is not None:
        for sunk in part.sink_parts:
            run.row_sink.commit(sunk)


def _merged(total: AnyAccumulator, part: AnyAccumulator) -> AnyAccumulator:
    if isinstance(total, MultilabelAccumulator) and isinstance(part, MultilabelAccumulator):
        return total.merge(part)
    if isinstance(total, Accumulator) and isinstance(part, Accumulator):
        return total.merge(part)
    raise TypeError("cannot merge accumulators of different kinds")


def _score_chunk(run: Run, tally: Tally, chunk: Chunk) -> None:
    chunk.decoded.materialize(run.scratch())
    # every non-finite value is found and reported by validation: NumPy need not warn about it
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        _validate(run, chunk)
        _score_valid_rows(run, tally, chunk)
    if run.progress is not None:
        run.progress(run.tally.rows_read + tally.rows_read, run.total_rows)


def _score_valid_rows(run: Run, tally: Tally, chunk: Chunk) -> None:
    d = chunk.decoded
    first_ordinal = run.tally.rows_read + tally.rows_read + 1  # counted over all inputs
    tally.rows_read += chunk.batch.num_rows
    settings = run.settings
    codes = chunk.codes
    rows = Rows(d.preds, d.labels, d.targets, d.weights)
    local = np.arange(chunk.batch.num_rows)
    if codes is not None and codes.any():
        _record_problems(run, tally, chunk, codes)
        local = np.flatnonzero(codes == 0)
        rows = rows.subset(local)
    low = chunk.low  # a lower bound of the valid rows' probabilities too
    if settings.renormalize and run.layout.scale == "probs":
        rows.preds = rows.preds / rows.preds.sum(axis=0)
        low = None
    if not run.layout.group_columns:
        pred = _accumulate(tally.total, rows, low=low)
    else:
        pred, terms = _accumulate_shared(tally.total, rows, low)
        _update_groups(run, tally, chunk, local, rows, pred, terms)
    if settings.worst > 0 and pred is not None:
        _update_worst(run, tally, chunk, local, first_ordinal, pred, rows)
    if run.row_sink is not None and pred is not None:
        tally.sink_parts.append(run.row_sink.extract(chunk, local, first_ordinal + local, pred, rows))


def _accumulate(acc: AnyAccumulator, rows: Rows, pred: LogProbs | None = None,
                low: float | None = None) -> LogProbs | None:
    """Add rows to an accumulator; returns the predictions' logs (None for multilabel)."""
    if isinstance(acc, MultilabelAccumulator):
        assert rows.targets is not None
        acc.update_columns(rows.preds, rows.targets, rows.weights)
        return None
    pred = acc.log_probs(rows.preds, low) if pred is None else pred
    acc.update_class_major(pred, rows.labels, rows.targets, rows.weights)
    return pred


def _accumulate_shared(acc: AnyAccumulator, rows: Rows, low: float | None,
                       ) -> tuple[LogProbs | None, HardRows | None]:
    """:func:`_accumulate` for a block that is also split by group: with hard labels (and no
    zero weight, whose rows the accumulator drops), the per-row terms are computed once here
    and returned, so that the groups only sum them."""
    if isinstance(acc, MultilabelAccumulator) or rows.labels is None or (
            rows.weights is not None and not rows.weights.all()):
        return _accumulate(acc, rows, low=low), None
    pred = acc.log_probs(rows.preds, low)
    terms = hard_label_rows(pred, rows.labels)
    acc.update_class_major(pred, rows.labels, None, rows.weights, terms)
    return pred, terms


def _record_problems(run: Run, tally: Tally, chunk: Chunk, codes: validate.Codes) -> None:
    tally.problems.add(validate.reason_counts(codes), chunk.source)
    room = MAX_PROBLEMS_SHOWN - sum(p.reason != "ragged_row" for _, p in tally.problems.shown)
    for row in np.flatnonzero(codes)[: max(room, 0)]:
        problem = describe_problem(run.layout, chunk, int(row), int(codes[row]), run.settings.renormalize,
                                   run.settings.sum_tol)
        tally.problems.shown.append((chunk.source, problem))


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


LOGPROB_HINT = ("a log-probability above 0 is a probability above 1 (float32 rounding in a "
                "log-softmax makes such values: clip them at 0, np.minimum(x, 0), before writing "
                "the file), or pass --on-invalid skip to drop and count such rows")


def _bad_cell(code: int, value: Any, low: float, high: float) -> bool:
    """Does this raw cell explain reason ``code``?"""
    if code == validate.NULL:
        return value is None or value == ""  # a CSV read as text shows an empty cell as ""
    if value is None or code not in (validate.NOT_A_NUMBER, validate.NOT_FINITE, validate.OUT_OF_RANGE):
        return False
    number = _as_number(value)
    if number is None:
        return code == validate.NOT_A_NUMBER
    if code == validate.NOT_FINITE:
        return not math.isfinite(number)
    return code == validate.OUT_OF_RANGE and not low <= number <= high


def _expected_label(layout: Layout) -> str:
    if layout.binary and layout.positive is not None:
        return f"{escape_value(layout.positive)} (--positive) or one other value"
    if layout.binary and not layout.classes:
        return "0/1 or true/false"
    if not layout.classes:
        return "one of the classes"
    if layout.positional_labels:
        return (f"a class position 0..{len(layout.classes) - 1} (the label column's first rows are "
                "whole numbers, read as positions of the classes)")
    more = ", ..." if len(layout.classes) > 10 else ""
    return f"one of the classes ({one_of(layout.classes[:10])}{more})"


def _sum_problem(layout: Layout, chunk: Chunk, row: int, sum_tol: float, renormalize: bool,
                 ) -> CellProblem:
    """A row whose sum is off: its prediction columns, or its --target columns when the
    predictions are fine and the targets are not (targets are never renormalized)."""
    file_row = chunk.first_row + row
    line = _line(chunk.source, file_row)
    values = chunk.decoded.preds[:, row]
    if layout.scale == "logprobs":
        values = np.exp(values)
    total = float(values.sum()) if not layout.binary else math.nan
    preds_ok = total > 0 if renormalize else abs(total - 1.0) <= sum_tol
    targets = chunk.decoded.targets
    if targets is not None and layout.target_columns is not None and preds_ok:
        return CellProblem(file_row, _column_label(layout.target_columns),
                           f"sum {float(targets[:, row].sum())!r}", "sum_off",
                           "target values that sum to 1 (within --sum-tol)", line,
                           hint="each row of the --target columns must sum to 1; " + SKIP_HINT)
    column = _column_label(layout.pred_columns)
    if renormalize:
        return CellProblem(file_row, column, f"sum {total!r}", "sum_off", "a row sum above 0, to "
                           "renormalize by", line, hint="such a row cannot be renormalized; " + SKIP_HINT)
    return CellProblem(file_row, column, f"sum {total!r}", "sum_off", "a row sum within --sum-tol of 1", line)


def describe_problem(layout: Layout, chunk: Chunk, row: int, code: int, renormalize: bool,
                     sum_tol: float) -> CellProblem:
    """Locate a bad row's reason in a column and quote the cell as it was in the file."""
    reason, expected = validate.REASONS[code]
    file_row = chunk.first_row + row
    line = _line(chunk.source, file_row)
    if code in (validate.MISSING_LABEL, validate.UNKNOWN_LABEL) and layout.label_column:
        column = layout.label_column
        if code == validate.UNKNOWN_LABEL:
            expected = _expected_label(layout)
    elif code == validate.INVALID_WEIGHT and layout.weight_column:
        column = layout.weight_column
    elif code == validate.SUM_OFF:
        return _sum_problem(layout, chunk, row, sum_tol, renormalize)
    else:
        # each column by its own range: predictions in the layout's scale, targets in [0, 1]
        low, high = 0.0, validate.top_value(validate.Tolerance(renormalize=renormalize))
        pred_expected, pred_hint = expected, None
        if code == validate.OUT_OF_RANGE and layout.scale == "logprobs":
            low, high, pred_expected, pred_hint = -math.inf, 0.0, "a log-probability <= 0", LOGPROB_HINT
        elif code == validate.OUT_OF_RANGE and renormalize:
            pred_expected = "a finite score >= 0 (rows are renormalized)"
        candidates = [(c, low, high, pred_expected, pred_hint) for c in layout.pred_columns]
        candidates += [(c, 0.0, 1.0, expected, None) for c in layout.target_columns or ()]
        column, expected, hint = next(
            ((c, says, why) for c, lo, hi, says, why in candidates if not layout.pred_is_list
             and _bad_cell(code, chunk.batch.column(c)[row].as_py(), lo, hi)),
            (candidates[0][0], pred_expected, pred_hint))
        return CellProblem(file_row, column, _cell_text(chunk.batch, column, row), reason, expected, line,
                           hint=hint)
    return CellProblem(file_row, column, _cell_text(chunk.batch, column, row), reason, expected, line)


def group_value(value: Any) -> str | None:
    """A cell of a --by column as its group's value: text, None for a null (a group apart from
    a text cell "null", as in SQL's GROUP BY)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _id_text(value: Any) -> str:
    text = group_value(value)
    return "null" if text is None else text


def _group_codes(batch: pa.RecordBatch, names: Sequence[str],
                 ) -> tuple[Index, list[list[str | None]], int]:
    """One integer key per row for the combination of its group values, each column's value
    texts (the key of a row is Σ code_j · stride_j over the group columns), and the number of
    possible keys."""
    key = np.zeros(batch.num_rows, dtype=np.int64)
    texts: list[list[str | None]] = []
    for name in names:
        column = batch.column(name)
        encoded = column if pa.types.is_dictionary(column.type) else column.dictionary_encode()
        values = [group_value(v) for v in encoded.dictionary.to_pylist()] + [None]
        key = key * len(values) + ints_or(encoded.indices, len(values) - 1)
        texts.append(values)
    return key, texts, math.prod(len(values) for values in texts)


def _dense_keys(keys: Index, space: int) -> tuple[Index, Index]:
    """The distinct keys in ascending order and each row's position among them, as
    ``np.unique(keys, return_inverse=True)``, by counting instead of sorting when the keys are
    few (a block's group values usually are)."""
    if space > 4 * keys.size + 1024:
        unique, inverse = np.unique(keys, return_inverse=True)
        return unique, inverse.reshape(-1)
    present = np.bincount(keys, minlength=space) > 0
    position = np.cumsum(present, dtype=np.intp)
    position -= 1
    return np.flatnonzero(present), position[keys]


def _group_values(key: int, texts: list[list[str | None]]) -> GroupKey:
    values = []
    for column in reversed(texts):
        key, code = divmod(key, len(column))
        values.append(column[code])
    return tuple(reversed(values))


def _update_groups(run: Run, tally: Tally, chunk: Chunk, local: Index, rows: Rows,
                   pred: LogProbs | None, terms: HardRows | None) -> None:
    """Add a block's valid rows to their groups' states: with the rows' hard-label ``terms``,
    every group's statistics at once (see :func:`grouped_hard_label_stats`); otherwise the rows
    are split by group (one sort) and each part is scored on its own."""
    keys, texts, space = _group_codes(chunk.batch, run.layout.group_columns)
    unique, inverse = _dense_keys(keys[local], space)
    groups = [_group_values(key, texts) for key in unique.tolist()]
    if len(set(groups)) < len(groups):
        # distinct codes that read the same (NaNs with other bits, a dictionary that holds a
        # value twice) are one group
        merged = {group: i for i, group in enumerate(dict.fromkeys(groups))}
        inverse = np.array([merged[group] for group in groups], dtype=np.intp)[inverse]
        groups = list(merged)
    if terms is not None and pred is not None and rows.labels is not None:
        if tally.group_table is None:
            tally.group_table = GroupTable(run.n_classes, run.settings.eps, cast(Scale, run.layout.scale))
        tally.group_table.add(groups, grouped_hard_label_stats(pred, rows.labels, rows.weights, terms,
                                                               inverse, len(groups)))
        return
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(groups)))])
    for g, group in enumerate(groups):
        if group not in tally.groups:
            tally.groups[group] = run.new_accumulator()
        part = order[bounds[g] : bounds[g + 1]]
        _accumulate(tally.groups[group], rows.subset(part), None if pred is None else pred.select(part))


def _push_worst(heap: list[tuple[float, int, WorstRow]], item: tuple[float, int, WorstRow], n: int) -> None:
    if len(heap) < n:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def _update_worst(run: Run, tally: Tally, chunk: Chunk, local: Index, first_ordinal: int,
                  pred: LogProbs, rows: Rows) -> None:
    """Streaming top-N by loss: the block's N worst (argpartition), pushed into a heap of N."""
    n = run.settings.worst
    losses = row_losses(pred, rows.labels, rows.targets)
    if rows.weights is not None and not rows.weights.all():
        losses[rows.weights == 0] = -np.inf  # a zero-weight row is a dropped row: never listed
    candidates = np.arange(losses.size)
    if losses.size > n:
        candidates = np.argpartition(-losses, n - 1)[:n]
    candidates = candidates[losses[candidates] > -np.inf]
    if len(tally.worst) == n:
        candidates = candidates[losses[candidates] >= tally.worst[0][0]]
    id_column = chunk.batch.column(run.layout.id_column) if run.layout.id_column else None
    classes = run.classes
    for i in candidates.tolist():
        row = int(local[i])
        true_class = (int(rows.labels[i]) if rows.labels is not None
                      else int(np.argmax(cast(npt.NDArray[np.float64], rows.targets)[:, i])))
        entry = WorstRow(chunk.source.name, chunk.first_row + row,
                         None if id_column is None else _id_text(id_column[row].as_py()),
                         classes[true_class] if classes else str(true_class),
                         float(pred.probs[true_class, i]), float(losses[i]))
        # ties: the earlier row ranks higher (larger −ordinal)
        _push_worst(tally.worst, (float(losses[i]), -(first_ordinal + row), entry), n)


def true_row(row: int, dropped: Sequence[int]) -> int:
    """The file's data row of the ``row``-th row that survived parsing, given the sorted data
    rows that the parser ``dropped``."""
    for gone in dropped:
        if gone <= row:
            row += 1
        else:
            break
    return row


def renumber(run: Run) -> None:
    """Problems and worst rows of files with ragged rows: back to the file's own row numbers."""
    def fix(source_name: str, row: int) -> int:
        return true_row(row, run.ragged_rows.get(source_name, ()))

    problems = run.tally.problems
    problems.shown = [(s, p if p.reason == "ragged_row" else replace(
        p, row=fix(s.name, p.row), line=None if p.line is None else fix(s.name, p.row) + 1))
        for s, p in problems.shown]
    run.tally.worst = [(loss, seq, replace(w, row=fix(w.file, w.row))) for loss, seq, w in run.tally.worst]


def _add_ragged(run: Run, tally: Tally, source: Source, ragged: readers.RaggedRows) -> None:
    if not ragged.count:
        return
    tally.problems.add({"ragged_row": ragged.count}, source)
    tally.rows_read += ragged.count
    # pyarrow drops a ragged row, so later rows arrive numbered one lower: remember where they were
    run.ragged_rows[source.name] = sorted(line - 1 for line in ragged.lines if line is not None)
    for line, want, got, text in ragged.rows[:MAX_PROBLEMS_SHOWN]:
        problem = CellProblem(line - 1 if line is not None else 0, "(whole row)", escape_value(text),
                              "ragged_row", f"{want} fields, got {got}", line)
        tally.problems.shown.append((source, problem))
