"""The one scoring state: additive float64 sums with ``update``, ``merge`` and ``finalize`` (and,
for ``--by``, the same sums of many groups kept as arrays until they become Accumulators).

Because the state is a sum, chunking, threads, several files and several processes are all just
addition (sacrebleu's "extract stats → sum → compute")."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeGuard

import numpy as np
import numpy.typing as npt

from xentcli.core import kernels, validate
from xentcli.core.kernels import ChunkStats, Floats
from xentcli.errors import DataError, UsageError

Scale = Literal["probs", "logits", "logprobs"]
SCALES = ("probs", "logits", "logprobs")
DEFAULT_EPS = float(np.finfo(np.float64).eps)
UNITS = {"e": "nats", "2": "bits", "10": "hartleys"}
# Weights may be any finite number >= 0, but a sum of them times a loss must stay finite: a
# total weight below this leaves room for losses up to ~1e8 (a clipped log loss is at most 36).
MAX_WEIGHT_SUM = 1e300


def is_number(value: object) -> TypeGuard[float]:
    """A finite real number (NumPy's scalars too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: object) -> TypeGuard[int]:
    """An integer (NumPy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def base_text(base: object) -> object:
    """A log base as the CLI spells it: 2 and 10 given as numbers become '2' and '10'."""
    return str(int(base)) if is_whole(base) else base


def unit_factor(base: str) -> float:
    """Nats per unit of the report: 1 (nats), ln 2 (bits) or ln 10 (hartleys)."""
    return 1.0 if base == "e" else math.log(float(base))


def _zeros_stats(n_classes: int) -> ChunkStats:
    vector = np.zeros(n_classes)
    return ChunkStats(
        0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, vector.copy(), vector.copy(), vector.copy(),
        vector.copy(), vector.copy(), vector.copy(),
    )


_STAT_FIELDS = tuple(f.name for f in fields(ChunkStats))


def add_stats(total: ChunkStats, part: ChunkStats) -> None:
    """total += part, field by field (in place)."""
    for name in _STAT_FIELDS:
        setattr(total, name, getattr(total, name) + getattr(part, name))



@dataclass(eq=False)  # compared by identity: its state is arrays
class Accumulator:
    """Streaming scorer for K classes.

    >>> import numpy as np
    >>> acc = Accumulator(n_classes=2)
    >>> acc.update(np.array([[0.9, 0.1], [0.2, 0.8]]), labels=np.array([0, 1]))
    >>> round(acc.finalize().cross_entropy, 6)
    0.164252
    """

    n_classes: int
    eps: float = DEFAULT_EPS
    scale: Scale = "probs"
    stats: ChunkStats = field(init=False)

    def __post_init__(self) -> None:
        if not (is_whole(self.n_classes) and self.n_classes >= 1):
            raise UsageError(f"n_classes: expected a whole number >= 1, got {self.n_classes!r}")
        if self.scale not in SCALES:
            raise UsageError(f"scale: expected one of {', '.join(SCALES)}, got {self.scale!r}")
        if not (is_number(self.eps) and 0 <= self.eps < 1):
            raise UsageError(f"eps: expected a number in [0, 1), got {self.eps!r}")
        # plain Python numbers: a float32 eps would clip at another value than it compares equal to
        self.n_classes, self.eps = int(self.n_classes), float(self.eps)
        self.stats = _zeros_stats(self.n_classes)

    def update(
        self,
        preds: npt.ArrayLike,
        labels: npt.ArrayLike | None = None,
        targets: npt.ArrayLike | None = None,
        weights: npt.ArrayLike | None = None,
    ) -> None:
        """Add a batch. ``preds`` (rows, classes) in this accumulator's scale; exactly one of
        ``labels`` (rows,) class indices or ``targets`` (rows, classes) distributions.

        The batch is checked as the CLI checks rows (finite values; probabilities in [0, 1] whose
        rows sum to 1 within 1e-3; labels 0 .. K − 1; weights finite and ≥ 0): a batch with an
        invalid row raises :class:`~xentcli.errors.DataError` naming it, and nothing of it is
        added."""
        if (labels is None) == (targets is None):
            raise DataError("update takes labels or targets, one of them")
        pred_arr = np.asarray(preds, dtype=np.float64)
        if pred_arr.shape == (0,):  # an empty list: no rows
            pred_arr = pred_arr.reshape(0, self.n_classes)
        pred_cm = pred_arr.T
        target_cm = None if targets is None else np.asarray(targets, dtype=np.float64).T
        weight_arr = None if weights is None else np.asarray(weights, dtype=np.float64)
        validate.check_shapes(pred_cm, self.n_classes, target_cm, weight_arr)
        label_idx = None if labels is None else validate.label_indices(labels, pred_cm.shape[-1],
                                                                       self.n_classes)
        validate.check_batch(pred_cm, self.scale, label_idx, target_cm, weight_arr)
        if weight_arr is not None:
            with np.errstate(over="ignore"):
                _check_weight_sum(self.stats.weight_sum + float(weight_arr.sum()), "this batch")
        self.update_class_major(self.log_probs(pred_cm), label_idx, target_cm, weight_arr)

    def log_probs(self, preds: Floats, low: float | None = None) -> kernels.LogProbs:
        """Turn class-major predictions in this accumulator's scale into probabilities and logs
        (``low``: a known lower bound of probabilities, see :func:`kernels.from_probs`)."""
        if self.scale == "logits":
            return kernels.from_logits(preds)
        if self.scale == "logprobs":
            return kernels.from_log_probs(preds)
        return kernels.from_probs(preds, self.eps, low)

    def update_class_major(
        self,
        pred: kernels.LogProbs,
        labels: npt.NDArray[np.intp] | None,
        targets: Floats | None,
        weights: Floats | None,
        terms: kernels.HardRows | None = None,
    ) -> None:
        """Add a batch already in class-major layout (the pipeline's fast path). ``terms``: the
        per-row terms of hard labels, when the caller has computed them (see
        :func:`kernels.hard_label_rows`)."""
        if pred.probs.shape[1] == 0:
            return
        if pred.probs.shape[0] != self.n_classes:
            raise ValueError(f"expected {self.n_classes} classes, got {pred.probs.shape[0]}")
        zero_weight_rows = 0
        if weights is not None and not weights.all():
            # a zero-weight row is a dropped row, also when its loss is infinite (0·inf is nan)
            keep = weights != 0
            zero_weight_rows = int((~keep).sum())
            pred = pred.select(keep)
            labels = None if labels is None else labels[keep]
            targets = None if targets is None else targets[:, keep]
            weights = weights[keep]
            terms = None  # they were the terms of all the rows
        if labels is not None:
            part = kernels.hard_label_stats(pred, labels, weights, terms)
        elif targets is not None:
            part = kernels.soft_target_stats(pred, targets, weights, self.eps)
        else:
            raise ValueError("update needs labels or targets")
        part.rows += zero_weight_rows
        add_stats(self.stats, part)

    def merge(self, other: Accumulator) -> Accumulator:
        """A new accumulator holding both states (associative and commutative): states of the
        same classes, scale and eps."""
        if not isinstance(other, Accumulator):
            raise UsageError(f"merge: expected an Accumulator, got {type(other).__name__}")
        for name in ("n_classes", "scale", "eps"):
            if getattr(other, name) != getattr(self, name):
                raise UsageError(f"cannot merge accumulators of different {name}: "
                                 f"{getattr(self, name)!r} and {getattr(other, name)!r}")
        merged = Accumulator(self.n_classes, self.eps, self.scale)
        add_stats(merged.stats, self.stats)
        add_stats(merged.stats, other.stats)
        return merged

    def finalize(self, base: str | int = "e") -> Scores:
        """Means and per-class values in the unit of ``base`` ('e', '2' or '10')."""
        text = base_text(base)
        if text not in UNITS:
            raise UsageError(f"base: expected 'e', '2' or '10', got {base!r}")
        return finalize_stats(self.stats, str(text))


@dataclass(frozen=True)
class ClassScores:
    support: float
    share: float | None
    mean_pred: float | None
    cross_entropy: float | None
    loss_share: float | None
    kl_divergence: float | None
    entropy_pred: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Scores:
    """Finalised metrics. A value with a zero denominator is None; an infinite loss stays inf
    here and becomes null only in JSON."""

    cross_entropy: float | None
    entropy_target: float | None
    kl_divergence: float | None
    entropy_pred: float | None
    prior_entropy: float | None
    normalized_cross_entropy: float | None
    perplexity: float | None
    accuracy: float | None
    weight_sum: float
    rows: int
    clipped: int
    per_class: Sequence[ClassScores]


GroupKey = tuple[str | None, ...]  # a group's values, one per --by column; None: a null cell


class GroupTable:
    """Hard-label statistics of many groups, as arrays with one row per group: a block adds the
    rows of all its groups in one NumPy operation per statistic, however many groups there are.
    (Updating one Accumulator per group and block costs ~30 µs of Python each: 365 groups in
    2M rows took 1.5 s instead of 0.45.) The sums become Accumulators when the pass ends."""

    def __init__(self, n_classes: int, eps: float = DEFAULT_EPS, scale: Scale = "probs") -> None:
        self.n_classes, self.eps, self.scale = n_classes, eps, scale
        self.ids: dict[GroupKey, int] = {}
        self._arrays: dict[str, npt.NDArray[Any]] = {}
        self._capacity = 0

    def add(self, keys: Sequence[GroupKey], stats: dict[str, npt.NDArray[Any]]) -> None:
        """Add each group's row of ``stats`` (see :func:`kernels.grouped_hard_label_stats`) to
        the group at the same position in ``keys``, which must be distinct (a repeated index in
        NumPy's ``a[ids] += v`` adds only once)."""
        if not keys:
            return
        ids = np.array([self.ids.setdefault(key, len(self.ids)) for key in keys], dtype=np.intp)
        if len(self.ids) > self._capacity:
            size = max(2 * self._capacity, len(self.ids), 16)
            for name, values in stats.items():
                grown = np.zeros((size, *values.shape[1:]), dtype=values.dtype)
                if name in self._arrays:
                    grown[: self._capacity] = self._arrays[name]
                self._arrays[name] = grown
            self._capacity = size
        for name, values in stats.items():
            self._arrays[name][ids] += values

    def accumulators(self) -> dict[GroupKey, Accumulator]:
        """One Accumulator per group, holding its sums."""
        out = {}
        for key, i in self.ids.items():
            acc = Accumulator(self.n_classes, self.eps, self.scale)
            acc.stats = ChunkStats(**{name: values[i].copy() if values.ndim > 1 else values[i].item()
                                      for name, values in self._arrays.items()})
            out[key] = acc
        return out


def _ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return None
    if math.isinf(numerator) and math.isinf(denominator):
        return None  # inf/inf: undefined
    return float(numerator) / float(denominator)


def entropy_of(distribution: Floats, total: float) -> float:
    """H(p̄) in nats of p̄ = distribution / total, 0·log 0 = 0: the prior entropy, with the
    class supports and the weight sum W (SPEC: p̄ = Σ w_i p_i / W). Soft targets may sum to 1 only
    within --sum-tol, and p̄ is then not renormalised: a single row's prior is its H(p)."""
    if total <= 0:
        return 0.0
    p = distribution / total
    p = p[p > 0]  # after the division: a subnormal share can become 0 there, and 0·log 0 = 0
    value = float(-(p * np.log(p)).sum())
    return value if value > 0 else 0.0  # a single class gives −0.0 (and max(−0.0, 0.0) is −0.0)


def _check_weight_sum(weight_sum: float, refused: str | None = None) -> None:
    """Every weight is finite, but their sum, and the sums of weighted losses, must stay so too
    (``refused``: what is refused, when it is not the whole run)."""
    if weight_sum < MAX_WEIGHT_SUM:
        return
    total = "more than a float64 holds" if math.isinf(weight_sum) else f"{weight_sum:.3g}"
    hint = "scale the weights down: only their ratios change the metrics"
    if refused is not None:
        hint += f" ({refused} was not added)"
    raise DataError(f"the weights add up to {total}, so the sums of weighted losses overflow "
                    f"(the limit is {MAX_WEIGHT_SUM:g})", hint)


def finalize_stats(stats: ChunkStats, base: str = "e") -> Scores:
    """Turn sums into the metrics of SPEC section 1."""
    _check_weight_sum(stats.weight_sum)
    unit = unit_factor(base)
    w = stats.weight_sum

    def mean(total: float) -> float | None:
        value = _ratio(total, w)
        return None if value is None else value / unit

    ce_nats = _ratio(stats.loss_sum, w)
    prior = entropy_of(stats.support, w) if w > 0 else None
    per_class = [
        ClassScores(
            support=float(stats.support[k]),
            share=_ratio(stats.support[k], w),
            mean_pred=_ratio(stats.pred_sum[k], w),
            cross_entropy=_in_unit(_ratio(stats.class_loss_sum[k], stats.support[k]), unit),
            loss_share=_ratio(stats.class_loss_sum[k], stats.loss_sum),
            kl_divergence=_in_unit(_ratio(stats.class_kl_sum[k], stats.support[k]), unit),
            entropy_pred=_in_unit(_ratio(stats.class_pred_entropy_sum[k], stats.support[k]), unit),
            accuracy=_ratio(stats.class_correct_sum[k], stats.support[k]),
        )
        for k in range(len(stats.support))
    ]
    return Scores(
        cross_entropy=mean(stats.loss_sum),
        entropy_target=mean(stats.target_entropy_sum),
        kl_divergence=mean(stats.kl_sum),
        entropy_pred=mean(stats.pred_entropy_sum),
        prior_entropy=_in_unit(prior, unit),
        normalized_cross_entropy=None if ce_nats is None or not prior else ce_nats / prior,
        perplexity=None if ce_nats is None else safe_exp(ce_nats),
        accuracy=_ratio(stats.correct_sum, w),
        weight_sum=w,
        rows=stats.rows,
        clipped=stats.clipped,
        per_class=per_class,
    )


def _in_unit(value: float | None, unit: float) -> float | None:
    return None if value is None else value / unit


def safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf
