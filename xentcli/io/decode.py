"""Arrow record batch → class-major float64 NumPy arrays and class indices for the core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from xentcli.core.kernels import Floats, Ints, binary_pair
from xentcli.core.validate import LIST_LENGTH, NOT_A_NUMBER, Codes, Column, Mask, merge_codes
from xentcli.errors import DataError, escape_value
from xentcli.io.layout import Layout, is_text

MISSING = -2
UNKNOWN = -1


@dataclass
class Decoded:
    """One chunk as the core wants it; ``forced`` carries reasons found while decoding."""

    preds: Floats  # (classes, rows), in the layout's scale
    pred_nulls: Mask | None
    labels: npt.NDArray[np.intp] | None
    targets: Floats | None
    target_nulls: Mask | None
    weights: Floats | None
    weight_nulls: Mask | None
    forced: Codes | None
    # Float prediction columns without nulls, as Arrow holds them, when ``preds`` is still to be
    # filled by :meth:`materialize` (``preds`` is then an empty placeholder).
    columns: list[Column] | None = None

    def rows(self, start: int, stop: int) -> Decoded:
        """Rows start:stop, as views."""
        def cut(a: npt.NDArray[Any] | None) -> Any:
            return None if a is None else a[..., start:stop]

        columns = None if self.columns is None else [c[start:stop] for c in self.columns]
        return Decoded(cut(self.preds), cut(self.pred_nulls), cut(self.labels), cut(self.targets),
                       cut(self.target_nulls), cut(self.weights), cut(self.weight_nulls),
                       cut(self.forced), columns)

    def materialize(self, scratch: Floats) -> None:
        """Copy deferred columns into ``scratch`` (classes, ≥ rows) and use it as ``preds``.

        The scoring thread does this for each block into one buffer of its own, which stays in
        the CPU's cache for the passes that follow. Made ahead on the reader thread, the copy
        landed in a ring of buffers too large for the cache and cost that thread 0.05 s of CPU
        per 10M rows of 10 classes, while the scoring thread spends no more on it here."""
        if self.columns is None:
            return
        block = scratch[:, : len(self.columns[0])]
        for row, column in zip(block, self.columns, strict=True):
            np.copyto(row, column)
        self.preds, self.columns = block, None


# Arrow → NumPy by hand, from the buffers: pyarrow's to_numpy() and pa.scalar() import pandas on
# first use (~0.2 s), which would be most of the start-up time of a small run.


def _nulls(column: pa.Array) -> Mask | None:
    """Where the column is null, from its validity bitmap."""
    if column.null_count == 0:
        return None
    if pa.types.is_null(column.type) or column.buffers()[0] is None:
        return np.ones(len(column), dtype=bool)
    bits = np.unpackbits(np.frombuffer(column.buffers()[0], np.uint8), bitorder="little")
    return bits[column.offset : column.offset + len(column)] == 0


def _primitive(column: pa.Array) -> npt.NDArray[np.number]:
    """A fixed-width integer or float column's values, zero-copy (values under nulls are
    arbitrary: callers mask them with :func:`_nulls`)."""
    signed = pa.types.is_signed_integer(column.type)
    kind = "f" if pa.types.is_floating(column.type) else "i" if signed else "u"
    dtype = np.dtype(f"{kind}{column.type.bit_width // 8}")
    return np.frombuffer(column.buffers()[1], dtype=dtype, count=len(column),
                         offset=column.offset * dtype.itemsize)


def ints_or(column: pa.Array, null_value: int) -> npt.NDArray[np.intp]:
    """An integer column as NumPy with nulls replaced."""
    values = _primitive(column).astype(np.intp)
    nulls = _nulls(column)
    if nulls is not None:
        values[nulls] = null_value
    return values


def _floats(column: pa.Array) -> Floats:
    """A numeric column as float64 with NaN under nulls."""
    raw = _primitive(column)
    values: Floats = raw if raw.dtype == np.float64 else raw.astype(np.float64)  # type: ignore[assignment]
    nulls = _nulls(column)
    if nulls is not None:
        values = values.copy() if values is raw else values
        values[nulls] = np.nan
    return values


def _text_to_float(column: pa.Array) -> tuple[Floats, Mask | None]:
    """Text cells parsed as numbers; a cell that is not a number becomes NaN and is flagged."""
    try:
        return _floats(column.cast(pa.float64())), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = np.full(len(column), np.nan)
    bad = np.zeros(len(column), dtype=bool)
    for i, text in enumerate(column.to_pylist()):
        if not text:  # null or empty: a null, not bad text
            continue
        try:  # one cell at a time, by Arrow's rules (a slice, not pa.scalar: see above)
            values[i] = _floats(column.slice(i, 1).cast(pa.float64()))[0]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad[i] = True
    return values, bad


def _empty_text(column: pa.Array) -> Mask | None:
    """Where a text column holds "" (a CSV read as text shows an empty cell that way)."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    width = 8 if pa.types.is_large_string(column.type) else 4
    offsets = np.frombuffer(column.buffers()[1], dtype=f"i{width}", count=len(column) + 1,
                            offset=column.offset * width)
    empty = np.diff(offsets) == 0
    return empty if empty.any() else None


def to_float(column: pa.Array) -> tuple[Floats, Mask | None]:
    """A column as float64 (nulls → NaN) and the rows whose text was not a number."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if is_text(column.type) or pa.types.is_null(column.type):
        return _text_to_float(column)
    if pa.types.is_boolean(column.type) or pa.types.is_decimal(column.type):
        column = column.cast(pa.float64())
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DataError(f"column type {escape_value(str(column.type))} holds no numbers",
                        "prediction, target and weight columns must be numeric")
    return _floats(column), None


def _wide(
    batch: pa.RecordBatch, names: tuple[str, ...], buffer: Floats | None = None
) -> tuple[Floats, Mask | None, Mask | None]:
    """Wide columns into one (classes, rows) float64 block, written into ``buffer`` when given
    (reusing memory avoids faulting in fresh pages for every chunk)."""
    shape = (len(names), batch.num_rows)
    fits = buffer is not None and buffer.shape[0] == shape[0] and buffer.shape[1] >= shape[1]
    out = buffer[:, : shape[1]] if buffer is not None and fits else np.empty(shape)
    nulls: Mask | None = None
    bad_text: Mask | None = None
    for k, name in enumerate(names):
        column = batch.column(name)
        column_nulls = _nulls(column)
        if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
            np.copyto(out[k], _primitive(column))  # one pass: no float64 temporary
            if column_nulls is not None:
                out[k][column_nulls] = np.nan
            bad = None
        else:
            out[k], bad = to_float(column)
        empty = _empty_text(column)
        if empty is not None:
            column_nulls = empty if column_nulls is None else column_nulls | empty
        if column_nulls is not None:
            nulls = column_nulls if nulls is None else nulls | column_nulls
        if bad is not None:
            bad_text = bad if bad_text is None else bad_text | bad
    return out, nulls, bad_text


def _listed(column: pa.Array, n_classes: int) -> tuple[Floats, Mask | None, Mask | None]:
    """A list column with ``n_classes`` values per row into (classes, rows)."""
    if pa.types.is_list_view(column.type):
        column = column.cast(pa.list_(column.type.value_type))
    n_rows = len(column)
    import pyarrow.compute as pc  # here, not at import: ~25 ms of start-up that wide files skip

    lengths = ints_or(pc.list_value_length(column), -1)
    good = lengths == n_classes
    if good.all():
        values, _ = to_float(column.flatten())  # flatten honours a sliced array's offset
        return np.ascontiguousarray(values.reshape(n_rows, n_classes).T), None, None
    out = np.full((n_classes, n_rows), np.nan)
    if good.any():
        values, _ = to_float(column.filter(pa.array(good)).flatten())
        out[:, good] = values.reshape(-1, n_classes).T
    nulls = lengths == -1
    return out, (nulls if nulls.any() else None), ~good & ~nulls


def list_width(column: pa.Array) -> int | None:
    """Values in the first non-null row of a list column (how many classes it has)."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(column).drop_null()
    return int(lengths[0].as_py()) if len(lengths) else None


class LabelMapper:
    """Label cells → class indices (−1 unknown, −2 missing), matching by text; integer labels as
    positions when the layout says so; binary labels by their 0/1, true/false or --positive."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.classes: list[str] | None = list(layout.classes) if layout.classes is not None else None
        self.negative_seen: str | None = None
        self._index: dict[str, int] = {c: i for i, c in enumerate(self.classes or [])}

    def _code(self, text: str) -> int:
        if text == "":
            return MISSING
        if self.layout.positional_labels:
            try:
                position = int(text)
            except ValueError:
                return UNKNOWN
            return position if 0 <= position < len(self._index) else UNKNOWN
        if self.classes is None:
            return self._binary_code(text)
        if self.layout.binary and self.layout.label_kind != "integer" and text not in self._index:
            # TRUE, True → true (a CSV column of True/False, as pandas writes it, is read as text)
            return self._index.get(text.lower(), UNKNOWN)
        return self._index.get(text, UNKNOWN)

    def _binary_code(self, text: str) -> int:
        """Text labels of a binary file without fixed class names."""
        positive = self.layout.positive
        if positive is not None:
            if text == positive:
                return 1
            if self.negative_seen is None:
                self.negative_seen = text
            return 0 if text == self.negative_seen else UNKNOWN
        lowered = text.lower()
        if lowered in ("0", "1"):
            self._fix_classes(["0", "1"])
        elif lowered in ("true", "false"):
            self._fix_classes(["false", "true"])
        else:
            return UNKNOWN
        return self._code(text)

    def _fix_classes(self, names: list[str]) -> None:
        self.classes = names
        self._index = {c: i for i, c in enumerate(names)}

    def final_classes(self) -> list[str]:
        """Class names once the data has been seen (binary files may name them from the data)."""
        if self.classes is not None:
            return self.classes
        if self.layout.positive is not None:
            return [self.negative_seen or f"not {self.layout.positive}", self.layout.positive]
        return ["0", "1"]

    def map(self, column: pa.Array) -> npt.NDArray[np.intp]:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        encoded = column if pa.types.is_dictionary(column.type) else column.dictionary_encode()
        texts = [_label_text(v) for v in encoded.dictionary.to_pylist()]
        codes = np.array([self._code(t) for t in texts] + [MISSING], dtype=np.intp)
        if encoded.indices.null_count == 0:  # index straight from Arrow's buffer
            return codes.take(cast(Ints, _primitive(encoded.indices)))
        return codes.take(ints_or(encoded.indices, len(texts)))


def _label_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return "" if value is None else str(value)


def decode(
    batch: pa.RecordBatch,
    layout: Layout,
    n_classes: int,
    labels: LabelMapper | None,
    buffer: Floats | None = None,
    defer: bool = False,
) -> Decoded:
    """Everything the core needs from one batch, as float64 class-major arrays (the predictions
    of wide columns written into ``buffer`` when given). With ``defer``, float prediction columns
    without nulls are left as they are, for :meth:`Decoded.materialize`."""
    forced: Codes | None = None
    columns = _deferrable(batch, layout) if defer else None
    if columns is not None:
        preds, pred_nulls = np.empty((len(columns), 0)), None
    elif layout.pred_is_list:
        preds, pred_nulls, wrong_length = _listed(batch.column(layout.pred_columns[0]), n_classes)
        if wrong_length is not None and wrong_length.any():
            forced = np.where(wrong_length, LIST_LENGTH, 0).astype(np.uint8)
    else:
        preds, pred_nulls, bad_text = _wide(batch, layout.pred_columns, buffer)
        if bad_text is not None:
            forced = np.where(bad_text, NOT_A_NUMBER, 0).astype(np.uint8)
    if layout.binary:
        preds = binary_pair(preds[0], layout.scale)
    targets = target_nulls = None
    if layout.target_columns is not None:
        targets, target_nulls, bad_target = _wide(batch, layout.target_columns)
        if layout.binary:  # one column of P(positive), as the prediction's
            targets = binary_pair(targets[0], "probs")
        if bad_target is not None:
            more = np.where(bad_target, NOT_A_NUMBER, 0).astype(np.uint8)
            forced = merge_codes(forced, more)
    weights = weight_nulls = None
    if layout.weight_column is not None:
        column = batch.column(layout.weight_column)
        weights, bad_weight = to_float(column)
        weight_nulls = _nulls(column)
        if bad_weight is not None:
            weight_nulls = bad_weight if weight_nulls is None else weight_nulls | bad_weight
    mapped = labels.map(batch.column(layout.label_column)) if labels and layout.label_column else None
    return Decoded(preds, pred_nulls, mapped, targets, target_nulls, weights, weight_nulls, forced,
                   columns)


def _deferrable(batch: pa.RecordBatch, layout: Layout) -> list[Column] | None:
    """The prediction columns as zero-copy NumPy views, when they are wide float columns without
    nulls that need no reshaping (not a binary file's single column)."""
    if layout.pred_is_list or layout.binary:
        return None
    columns = [batch.column(name) for name in layout.pred_columns]
    if not all(pa.types.is_floating(c.type) and c.null_count == 0 for c in columns):
        return None
    return [cast(Column, _primitive(c)) for c in columns]
