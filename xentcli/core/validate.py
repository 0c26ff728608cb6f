"""Row validation: one reason code per row (0 = valid), computed with whole-chunk reductions so
that a clean chunk costs a few passes and a dirty one is classified only where it is dirty."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xentcli.core.kernels import Floats
from xentcli.errors import DataError

Mask = npt.NDArray[np.bool_]
Codes = npt.NDArray[np.uint8]
Column = npt.NDArray[np.floating]  # one class's values, in the file's float type

# code → (key in rows.skipped_by_reason, what was expected); earlier codes win within a row.
REASONS: dict[int, tuple[str, str]] = {
    1: ("missing_label", "a label (the cell is empty or null)"),
    2: ("unknown_label", "one of the classes"),
    3: ("null", "a number (the cell is empty or null)"),
    4: ("not_finite", "a finite number"),
    5: ("out_of_range", "a probability in [0, 1]"),
    6: ("sum_off", "the row's probabilities to sum to 1"),
    7: ("invalid_weight", "a finite weight >= 0"),
    8: ("not_a_number", "a number"),
    9: ("list_length", "one value per class"),
    10: ("ragged_row", "the header's number of fields"),
}
(MISSING_LABEL, UNKNOWN_LABEL, NULL, NOT_FINITE, OUT_OF_RANGE, SUM_OFF, INVALID_WEIGHT,
 NOT_A_NUMBER, LIST_LENGTH, RAGGED_ROW) = range(1, 11)


@dataclass(frozen=True)
class Tolerance:
    sum_tol: float = 1e-3
    renormalize: bool = False
    check_sums: bool = True  # False for multilabel: each column is its own Bernoulli


def top_value(tol: Tolerance) -> float:
    """The largest value allowed: 1, or any finite size when rows are renormalised (scores)."""
    return float(np.finfo(np.float64).max) if tol.renormalize else 1.0


def _row_ok(values: Floats, is_prob: bool, tol: Tolerance, top: float,
            bounds: tuple[float, float] | None = None) -> Mask | None:
    """Rows that pass every check, None when all do (the fast path: a row sum and four
    reductions, two of them skipped when the caller has ``bounds``, a lower and an upper bound
    of the block's values)."""
    if not is_prob:
        return np.asarray(np.isfinite(values).all(axis=0))
    if not values.size:
        return None
    low, high = (float(values.min()), values.max()) if bounds is None else bounds
    in_range = low >= 0 and high <= top  # NaN fails both
    if not tol.check_sums:
        return None if in_range else _in_range_rows(values, top, in_range)
    sums = values.sum(axis=0)
    if in_range and _sums_ok(sums, tol):
        return None
    ok = _in_range_rows(values, top, in_range)
    ok &= (sums > 0) if tol.renormalize else (np.abs(sums - 1.0) <= tol.sum_tol)
    return ok


def _in_range_rows(values: Floats, top: float, in_range: bool) -> Mask:
    if in_range:
        return np.ones(values.shape[1], dtype=bool)
    return np.asarray((values.min(axis=0) >= 0) & (values.max(axis=0) <= top))


def _sums_ok(sums: Floats, tol: Tolerance) -> bool:
    """Every row sum (of a block with rows) passes, decided from the smallest and the largest
    alone (no temporaries): s − 1 rounds monotonically in s, so |s − 1| <= tol holds for all
    sums when it holds for both ends (NaN fails)."""
    low, high = float(sums.min()), float(sums.max())
    if tol.renormalize:
        return low > 0
    return abs(low - 1.0) <= tol.sum_tol and abs(high - 1.0) <= tol.sum_tol


def _distribution_codes(
    values: Floats, null_rows: Mask | None, is_prob: bool, tol: Tolerance, top: float | None = None,
    bounds: tuple[float, float] | None = None,
) -> Codes | None:
    """Reason per row for a (classes, rows) block of probabilities (or logits if not is_prob)."""
    n_rows = values.shape[1]
    top = top_value(tol) if top is None else top
    ok = _row_ok(values, is_prob, tol, top, bounds)
    if ok is None and null_rows is None:
        return None
    ok = np.ones(n_rows, dtype=bool) if ok is None else ok
    if null_rows is not None:
        ok &= ~null_rows
    if ok.all():
        return None
    codes = np.zeros(n_rows, dtype=np.uint8)
    bad = np.flatnonzero(~ok)
    sub = values[:, bad]
    finite = np.isfinite(sub).all(axis=0)
    in_range = ((sub >= 0) & (sub <= top)).all(axis=0) if is_prob else finite
    codes[bad] = np.where(finite, np.where(in_range, SUM_OFF, OUT_OF_RANGE), NOT_FINITE)
    if null_rows is not None:
        codes[null_rows] = NULL
    return codes


def merge_codes(codes: Codes | None, more: Codes | None) -> Codes | None:
    """Keep the earliest (highest-priority) reason of each row."""
    if more is None:
        return codes
    if codes is None:
        return more
    take = (more != 0) & ((codes == 0) | (more < codes))
    codes[take] = more[take]
    return codes


def overlay_forced(codes: Codes | None, forced: Codes | None) -> Codes | None:
    """Reasons found while decoding (text that is not a number, a list of the wrong length)
    replace what validation saw in the same row (the NaN such a cell became), but not a
    problem with the row's label."""
    if forced is None:
        return codes
    if codes is None:
        return forced
    take = (forced != 0) & (codes != MISSING_LABEL) & (codes != UNKNOWN_LABEL)
    codes[take] = forced[take]
    return codes


def _prediction_codes(preds: Floats, nulls: Mask | None, scale: str, tol: Tolerance,
                      bounds: tuple[float, float] | None = None) -> Codes | None:
    if scale == "probs":
        return _distribution_codes(preds, nulls, True, tol, bounds=bounds)
    if scale == "logits":
        return _distribution_codes(preds, nulls, False, tol)  # finite
    # log-probabilities: −inf is log 0, a valid value; NaN and +inf are not
    codes = _distribution_codes(np.where(np.isneginf(preds), 0.0, preds), nulls, False, tol)
    # a value above 0 is a probability above 1, out of range (also one that exp rounds to 1)
    above = (preds > 0).any(axis=0)
    if above.any():
        codes = merge_codes(codes, np.where(above, OUT_OF_RANGE, 0).astype(np.uint8))
    # and they must be the logs of a distribution
    probs = np.exp(np.minimum(preds, 0.0))
    as_probs = Tolerance(tol.sum_tol, False, tol.check_sums)
    return merge_codes(codes, _distribution_codes(probs, None, True, as_probs, top=1.0))


def check_rows(
    preds: Floats,
    pred_nulls: Mask | None,
    scale: str,
    labels: npt.NDArray[np.intp] | None,
    targets: Floats | None,
    target_nulls: Mask | None,
    weights: Floats | None,
    weight_nulls: Mask | None,
    tol: Tolerance,
    bounds: tuple[float, float] | None = None,
) -> Codes | None:
    """Reason codes for every row of a chunk, or None when every row is valid.

    Labels use −1 for an unknown label and −2 for a missing one (see ``io.decode``). ``bounds``:
    a lower and an upper bound of ``preds`` (its min and max, or those of a larger batch it was
    cut from), when the caller already knows them."""
    codes = _prediction_codes(preds, pred_nulls, scale, tol, bounds)
    if targets is not None:
        target_tol = Tolerance(tol.sum_tol, renormalize=False, check_sums=tol.check_sums)
        codes = merge_codes(codes, _distribution_codes(targets, target_nulls, True, target_tol))
    if labels is not None and labels.size and labels.min() < 0:
        label_codes = np.where(labels == -2, MISSING_LABEL, np.where(labels == -1, UNKNOWN_LABEL, 0))
        codes = merge_codes(codes, label_codes.astype(np.uint8))
    if weights is not None:
        bad_weight = ~(np.isfinite(weights) & (weights >= 0))
        if weight_nulls is not None:
            bad_weight |= weight_nulls
        if bad_weight.any():
            codes = merge_codes(codes, np.where(bad_weight, INVALID_WEIGHT, 0).astype(np.uint8))
    return codes


def reason_counts(codes: Codes) -> dict[str, int]:
    """{reason key: rows} for the non-zero codes."""
    counts = np.bincount(codes, minlength=len(REASONS) + 1)
    return {REASONS[c][0]: int(counts[c]) for c in REASONS if counts[c]}


# ---------------------------------------------------------------------------------------------
# The Python API's batches (Accumulator.update): the CLI's rules, with its default --sum-tol


def label_indices(labels: npt.ArrayLike, n_rows: int, n_classes: int) -> npt.NDArray[np.intp]:
    """Labels given to ``update`` as class indices, checked: integers in 0 .. n_classes − 1, one
    per row (a negative index would otherwise count as a class from the end)."""
    raw = np.asarray(labels)
    if raw.shape != (n_rows,):
        raise DataError(f"labels: expected {n_rows} class indices (one per row), got shape {raw.shape}")
    if raw.size and raw.dtype.kind not in "iu":
        raise DataError(f"labels: expected integer class indices 0..{n_classes - 1}, got {raw.dtype}",
                        "map class names to their indices first")
    bad = np.flatnonzero((raw < 0) | (raw >= n_classes))
    if bad.size:
        raise DataError(f"labels: {bad.size} outside 0..{n_classes - 1}; first at row index "
                        f"{bad[0]}: {raw[bad[0]]}",
                        "drop the rows to ignore (an ignore index such as -100) before update")
    return raw.astype(np.intp, copy=False)


def check_shapes(preds: Floats, n_classes: int, targets: Floats | None, weights: Floats | None) -> None:
    """A batch given to ``update`` (class-major): (classes, rows) predictions, targets of the same
    shape, one weight per row."""
    if preds.ndim != 2 or preds.shape[0] != n_classes:
        raise DataError(f"preds: expected (rows, {n_classes}) values, got shape {preds.T.shape}")
    rows = preds.shape[1]
    if targets is not None and targets.shape != preds.shape:
        raise DataError(f"targets: expected the shape of preds, {preds.T.shape}, got {targets.T.shape}")
    if weights is not None and weights.shape != (rows,):
        raise DataError(f"weights: expected {rows} weights (one per row), got shape {weights.shape}")


def check_batch(preds: Floats, scale: str, labels: npt.NDArray[np.intp] | None, targets: Floats | None,
                weights: Floats | None, check_sums: bool = True) -> None:
    """Refuse a batch given to ``update`` (class-major) that has an invalid row, as the CLI's
    default ``--on-invalid error`` does: nothing of it is added."""
    codes = check_rows(preds, None, scale, labels, targets, None, weights, None,
                       Tolerance(check_sums=check_sums))
    if codes is None:
        return
    bad = np.flatnonzero(codes)
    reason, expected = REASONS[int(codes[bad[0]])]
    raise DataError(f"{bad.size} invalid row{'s' if bad.size > 1 else ''} in the batch; first at row "
                    f"index {bad[0]} ({reason}): expected {expected}",
                    "drop or fix such rows before update (nothing of this batch was added)")
