"""Per-chunk NumPy math. Every function here takes class-major arrays, shape ``(classes, rows)``,
and returns additive statistics; nothing here allocates per-row Python objects.

Class-major keeps each class's column contiguous (as it arrives from Arrow), so row reductions
are vectorised adds of whole columns rather than short strided loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]


def _bincount(labels: Ints, weights: Floats, n_classes: int) -> Floats:
    """Σ weights of each label 0 .. n_classes − 1, as np.bincount(labels, weights): np.add.at
    takes ~25 µs on a 32768-row block where bincount takes ~37 (it first scans for the range)."""
    sums = np.zeros(n_classes)
    np.add.at(sums, labels, weights)
    return sums


def _count(labels: Ints, n_bins: int) -> Floats:
    """How many times each of 0 .. n_bins − 1 occurs in labels (np.add.at: see _bincount)."""
    counts = np.zeros(n_bins, dtype=np.intp)
    np.add.at(counts, labels, 1)
    return counts.astype(np.float64)

# Below this |argument| the closed forms of g and h lose digits to cancellation, so their
# Taylor series are used instead (8 terms: the next one is < 1e-16 relative there).
_SERIES_CUTOFF = 1e-2


@dataclass
class ChunkStats:
    """Additive statistics of a chunk, all in nats. ``merge`` of two is their sum."""

    rows: int
    weight_sum: float
    loss_sum: float  # Σ w H(p, q)
    target_entropy_sum: float  # Σ w H(p)
    kl_sum: float  # Σ w KL(p ‖ q)
    pred_entropy_sum: float  # Σ w H(q)
    correct_sum: float  # Σ w [argmax q = argmax p]
    clipped: int  # entries with p > 0 whose q was clipped up to eps
    support: Floats  # (classes,) Σ w p_k
    pred_sum: Floats  # (classes,) Σ w q_k
    class_loss_sum: Floats  # (classes,) Σ w p_k (−log q_k)
    class_kl_sum: Floats  # (classes,) Σ w rel_entr(p_k, q_k)
    class_pred_entropy_sum: Floats  # (classes,) Σ w p_k H(q)
    class_correct_sum: Floats  # (classes,) Σ w p_k [argmax q = k]


@dataclass
class LogProbs:
    """Predictions of a chunk: probabilities and their (clipped) logs, both ``(classes, rows)``."""

    probs: Floats
    log_probs: Floats
    clipped_mask: npt.NDArray[np.bool_] | None  # where q < eps (probs scale only)
    exact_logs: bool  # True when log q came from logits/logprobs, not from clipping q
    finite_logs: bool = False  # True when no log q can be −inf (skips a check in entropies)

    def select(self, rows: npt.NDArray[Any]) -> LogProbs:
        """The same predictions for a subset of rows (a mask or indices)."""
        mask = None if self.clipped_mask is None else self.clipped_mask[:, rows]
        return LogProbs(self.probs[:, rows], self.log_probs[:, rows], mask, self.exact_logs,
                        self.finite_logs)


def from_probs(probs: Floats, eps: float, low: float | None = None) -> LogProbs:
    """Log of probabilities clipped up to ``eps`` (``eps == 0``: no clipping, log 0 = −inf).

    The clip (a pass and a temporary) is skipped when no probability of the chunk is below eps,
    which is the common case. ``low``, when given, is a lower bound of ``probs`` already known
    (the minimum validation found in the block these rows come from): it saves a pass."""
    if probs.size == 0:
        return LogProbs(probs, np.log(probs), None, exact_logs=False, finite_logs=True)
    if low is None or not low >= eps:  # not: NaN too
        low = float(probs.min())
    with np.errstate(divide="ignore"):
        if eps > 0 and low < eps:
            return LogProbs(probs, np.log(np.maximum(probs, eps)), probs < eps, exact_logs=False,
                            finite_logs=True)
        return LogProbs(probs, np.log(probs), None, exact_logs=False, finite_logs=low > 0)


def from_logits(logits: Floats) -> LogProbs:
    """Stable log-softmax over classes (max subtracted). A binary file's single logit x arrives
    as the pair [0, x], whose log-softmax is [log(1 − σ(x)), log σ(x)]."""
    shifted = logits - logits.max(axis=0)
    # log Σ exp(shifted) as log1p of the sum without one top term, which is exactly 1: added to
    # that 1 first, the others' sum would lose its digits (a confident row's loss of 1e-20 → 0)
    terms = np.exp(shifted)
    total = terms.sum(axis=0)
    terms -= shifted == 0  # every top term (ties too) is exactly 1, and exactly 0 now
    rest = terms.sum(axis=0)
    rest += np.rint(total - rest) - 1.0  # the other tops of a tie: the count is an exact integer
    log_probs = shifted - np.log1p(rest)
    return LogProbs(np.exp(log_probs), log_probs, None, exact_logs=True)


def from_log_probs(log_probs: Floats) -> LogProbs:
    """Predictions given as log-probabilities: used exactly, nothing clipped."""
    return LogProbs(np.exp(log_probs), log_probs, None, exact_logs=True)


def log1mexp(log_p: Floats) -> Floats:
    """log(1 − p) from log p, accurate at both ends (Mächler 2012): log(−expm1(x)) near 0,
    log1p(−exp(x)) below −ln 2."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(log_p > -math.log(2), np.log(-np.expm1(log_p)), np.log1p(-np.exp(log_p)))


def binary_pair(positive: Floats, scale: str) -> Floats:
    """One positive-class column (rows,) as a two-class block (2, rows) in the same scale:
    [1 − p, p]; [0, x] for a logit (its softmax is [1 − σ(x), σ(x)]); [log(1 − p), log p] for a
    log-probability, where a value above 0 is kept as it is for validation to refuse."""
    if scale == "logits":
        return np.stack([np.zeros_like(positive), positive])
    if scale == "logprobs":
        return np.stack([np.where(positive > 0, 0.0, log1mexp(positive)), positive])
    return np.stack([1.0 - positive, positive])


def row_pred_entropy(pred: LogProbs) -> Floats:
    """H(q) per row, with 0·log 0 = 0 also where log q = −inf (eps = 0, or a log-probability of
    −inf given as such)."""
    if not pred.finite_logs and pred.probs.size and pred.probs.min() == 0 \
            and np.isneginf(pred.log_probs).any():
        with np.errstate(invalid="ignore"):
            terms = pred.probs * pred.log_probs
        terms[pred.probs == 0] = 0.0
        return -terms.sum(axis=0)
    return -np.einsum("kn,kn->n", pred.probs, pred.log_probs)


_ROW_NUMBERS = np.arange(0)
_ONES = np.ones(0)


def _row_numbers(n_rows: int) -> Ints:
    """0, 1, …, n_rows − 1, from a cache that grows to the largest block seen."""
    global _ROW_NUMBERS
    if _ROW_NUMBERS.size < n_rows:
        _ROW_NUMBERS = np.arange(n_rows)
    return _ROW_NUMBERS[:n_rows]


def _ones(n_rows: int) -> Floats:
    """n_rows ones, from a cache that grows to the largest block seen."""
    global _ONES
    if _ONES.size < n_rows:
        _ONES = np.ones(n_rows)
    return _ONES[:n_rows]


def pick(block: npt.NDArray[Any], labels: Ints) -> npt.NDArray[Any]:
    """block[labels[i], i] for every row i (a flat gather when the block is contiguous)."""
    n_rows = block.shape[1]
    if block.flags.c_contiguous:
        flat = labels * n_rows
        flat += _row_numbers(n_rows)
        return block.ravel().take(flat)
    return np.take_along_axis(block, labels[None, :], axis=0)[0]


def argmax_hits(pred: LogProbs, labels: Ints, picked_logs: Floats | None = None) -> npt.NDArray[np.bool_]:
    """[argmax_k q_k == label] per row, ties going to the lowest class index (as np.argmax).

    np.argmax along the class axis is ~15x slower than a max reduction here, so it runs only on
    rows whose maximum is shared by several classes. The search runs on log q (contiguous, and
    monotone in q); rounding can make two logs equal where the probabilities differ, and such a
    row is then decided on q itself, like any tie."""
    logs = pred.log_probs
    n_rows = logs.shape[1]
    high = logs.max(axis=0)
    hits = (pick(logs, labels) if picked_logs is None else picked_logs) == high
    at_max = logs == high
    if np.count_nonzero(at_max) > n_rows:
        tied = np.flatnonzero(np.count_nonzero(at_max, axis=0) > 1)
        hits[tied] = pred.probs[:, tied].argmax(axis=0) == labels[tied]
    return hits


@dataclass
class HardRows:
    """Per-row terms of one-hot targets, computed once per block and summed for the block and
    for each of its groups."""

    true_logs: Floats  # log q_y (clipped)
    pred_entropy: Floats  # H(q)
    correct: npt.NDArray[np.bool_]  # argmax q == y
    clipped: npt.NDArray[np.bool_] | None  # q_y was clipped up to eps


def hard_label_rows(pred: LogProbs, labels: Ints) -> HardRows:
    """The per-row terms of a block with hard labels ``labels`` (rows,)."""
    true_logs = pick(pred.log_probs, labels)
    clipped = None if pred.clipped_mask is None else pick(pred.clipped_mask, labels)
    return HardRows(true_logs, row_pred_entropy(pred), argmax_hits(pred, labels, true_logs), clipped)


def hard_label_stats(pred: LogProbs, labels: Ints, weights: Floats | None,
                     terms: HardRows | None = None) -> ChunkStats:
    """Statistics for one-hot targets given as class indices ``labels`` (rows,) (``terms``: the
    rows' terms, when already computed)."""
    n_classes, n_rows = pred.probs.shape
    terms = hard_label_rows(pred, labels) if terms is None else terms
    loss = -terms.true_logs  # −log q_y; also the KL, since H(p) = 0
    pred_entropy = terms.pred_entropy
    correct = terms.correct
    clipped = 0 if terms.clipped is None else int(terms.clipped.sum())
    if weights is None:
        # one count for both: label k with a miss counts at k, with a hit at n_classes + k
        slots = correct * n_classes
        slots += labels
        counts = _count(slots, 2 * n_classes)
        class_correct = counts[n_classes:]
        support = counts[:n_classes] + class_correct
        # each class's sum as one matrix-vector product (BLAS), as with weights below: 11.5 ms
        # per 10M rows of 10 classes, against 15 for probs.sum(axis=1) (a block in cache)
        weight_sum, pred_sum = float(n_rows), pred.probs @ _ones(n_rows)
    else:
        loss, pred_entropy = loss * weights, pred_entropy * weights
        support = _bincount(labels, weights, n_classes)
        class_correct = _bincount(labels[correct], weights[correct], n_classes)
        weight_sum, pred_sum = float(weights.sum()), pred.probs @ weights
    class_loss = _bincount(labels, loss, n_classes)
    loss_sum = float(loss.sum())
    return ChunkStats(
        rows=n_rows,
        weight_sum=weight_sum,
        loss_sum=loss_sum,
        target_entropy_sum=0.0,
        kl_sum=loss_sum,
        pred_entropy_sum=float(pred_entropy.sum()),
        correct_sum=float(class_correct.sum()),
        clipped=clipped,
        support=support,
        pred_sum=pred_sum,
        class_loss_sum=class_loss,
        class_kl_sum=class_loss.copy(),
        class_pred_entropy_sum=_bincount(labels, pred_entropy, n_classes),
        class_correct_sum=class_correct,
    )


def grouped_hard_label_stats(pred: LogProbs, labels: Ints, weights: Floats | None, terms: HardRows,
                             groups: Ints, n_groups: int) -> dict[str, npt.NDArray[Any]]:
    """:func:`hard_label_stats` of each group of rows (``groups``: each row's group, 0 ..
    n_groups − 1), as every :class:`ChunkStats` field with a leading group axis: one bincount
    per statistic over (group, class) keys instead of one pass of the whole kernel per group."""
    n_classes = pred.probs.shape[0]
    cells = n_groups * n_classes
    keys = groups * n_classes
    keys += labels
    loss, pred_entropy = -terms.true_logs, terms.pred_entropy
    if weights is None:
        slots = terms.correct * cells
        slots += keys
        counts = np.bincount(slots, minlength=2 * cells).astype(np.float64)
        class_correct = counts[cells:]
        support = counts[:cells] + class_correct
        pred_sum = [_bincount(groups, pred.probs[k], n_groups) for k in range(n_classes)]
    else:
        loss, pred_entropy = loss * weights, pred_entropy * weights
        support = _bincount(keys, weights, cells)
        class_correct = _bincount(keys[terms.correct], weights[terms.correct], cells)
        pred_sum = [_bincount(groups, pred.probs[k] * weights, n_groups) for k in range(n_classes)]
    shape = (n_groups, n_classes)
    class_loss = _bincount(keys, loss, cells).reshape(shape)
    class_entropy = _bincount(keys, pred_entropy, cells).reshape(shape)
    support, class_correct = support.reshape(shape), class_correct.reshape(shape)
    loss_sum = class_loss.sum(axis=1)
    return {
        "rows": np.bincount(groups, minlength=n_groups),
        "weight_sum": support.sum(axis=1),
        "loss_sum": loss_sum,
        "target_entropy_sum": np.zeros(n_groups),
        "kl_sum": loss_sum.copy(),
        "pred_entropy_sum": class_entropy.sum(axis=1),
        "correct_sum": class_correct.sum(axis=1),
        "clipped": (np.zeros(n_groups, dtype=np.intp) if terms.clipped is None
                    else np.bincount(groups[terms.clipped], minlength=n_groups)),
        "support": support,
        "pred_sum": np.stack(pred_sum, axis=1),
        "class_loss_sum": class_loss,
        "class_kl_sum": class_loss.copy(),
        "class_pred_entropy_sum": class_entropy,
        "class_correct_sum": class_correct,
    }


def _series(x: Floats, coefficients: tuple[float, ...]) -> Floats:
    """Σ_j c_j x^(j+2), by Horner's rule."""
    acc = np.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = acc * x + c
    return acc * x * x


# g(t) = (1+t)·log1p(t) − t = Σ_{n≥2} (−1)^n t^n / (n(n−1))
_G_COEFFS = tuple((-1.0) ** n / (n * (n - 1)) for n in range(2, 10))
# h(δ) = δ − 1 + exp(−δ) = Σ_{n≥2} (−1)^n δ^n / n!
_H_COEFFS = tuple((-1.0) ** n / float(np.prod(np.arange(1, n + 1))) for n in range(2, 10))


def _g(t: Floats) -> Floats:
    """g(t) for t ≥ −1/2 (below, rel_entr_terms takes p·log(p/q) as written)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        closed = (1.0 + t) * np.log1p(t) - t
    return np.where(np.abs(t) < _SERIES_CUTOFF, _series(t, _G_COEFFS), closed)


def _h(delta: Floats) -> Floats:
    """h(δ) for |δ| < 1 (where exp(−δ) cannot overflow)."""
    closed = delta + np.expm1(-delta)
    return np.where(np.abs(delta) < _SERIES_CUTOFF, _series(delta, _H_COEFFS), closed)


def log_targets(targets: Floats) -> Floats:
    """log p where p > 0, and 0 where p = 0 (so that p·log p is 0 there)."""
    with np.errstate(divide="ignore"):
        return np.log(np.where(targets > 0, targets, 1.0))


def rel_entr_terms(targets: Floats, log_p: Floats, pred: LogProbs, eps: float) -> Floats:
    """rel_entr(p, q) = p·log(p/q) elementwise, computed so that it keeps its digits when p ≈ q.

    With d = p − q and t = d/q: p·log(p/q) = q·g(t) + d, where g(t) = (1+t)·log1p(t) − t ≥ 0 is
    second order in t and evaluated by its series near 0. The row sum Σ q·g(t) is then a sum of
    non-negative terms, and Σ d is exactly 1 − Σq for normalised targets. Where p < q/2 the
    terms are p·log(p/q) as written: the form above would lose p's digits to q's there. For
    exact logs the same idea runs on δ = log p − log q: p·δ = p·h(δ) + (p − q), h(δ) = δ − 1 +
    e^−δ (and p·δ as written where |δ| ≥ 1). ``log_p``: :func:`log_targets` of the targets.
    """
    positive = targets > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if pred.exact_logs:
            delta = log_p - pred.log_probs
            near = np.abs(delta) < 1.0  # only there does p·δ cancel against the row's other terms
            terms = np.where(near, targets * _h(np.where(near, delta, 0.0)) + (targets - pred.probs),
                             targets * delta)
        else:
            q = np.maximum(pred.probs, eps) if eps > 0 else pred.probs
            d = targets - q
            terms = q * _g(d / q) + d
            # where p < q/2 the two parts cancel (q·g → q and d → −q as p/q → 0) and leave an
            # error of an ulp of q, while log p − log q is not near 0 there and is exact enough
            # (pred.log_probs is the log of q clipped, as q here)
            terms = np.where(targets < 0.5 * q, targets * (log_p - pred.log_probs), terms)
            terms = np.where(positive & (q == 0), np.inf, terms)
    return np.where(positive, terms, 0.0)


def soft_target_stats(pred: LogProbs, targets: Floats, weights: Floats | None, eps: float) -> ChunkStats:
    """Statistics for target distributions ``targets`` (classes, rows)."""
    n_classes, n_rows = pred.probs.shape
    positive = targets > 0
    log_p = log_targets(targets)
    with np.errstate(invalid="ignore"):
        loss_terms = np.where(positive, -targets * pred.log_probs, 0.0)
    target_entropy = -(targets * log_p).sum(axis=0)
    kl_terms = rel_entr_terms(targets, log_p, pred, eps)
    pred_entropy = row_pred_entropy(pred)
    pred_arg = pred.probs.argmax(axis=0)
    rows = np.arange(n_rows)
    correct = pred_arg == targets.argmax(axis=0)
    clipped = 0 if pred.clipped_mask is None else int((pred.clipped_mask & positive).sum())
    w = np.ones(n_rows) if weights is None else weights
    loss = loss_terms.sum(axis=0)
    return ChunkStats(
        rows=n_rows,
        weight_sum=float(w.sum()),
        loss_sum=float(loss @ w),
        target_entropy_sum=float(target_entropy @ w),
        kl_sum=float(kl_terms.sum(axis=0) @ w),
        pred_entropy_sum=float(pred_entropy @ w),
        correct_sum=float(np.where(correct, w, 0.0).sum()),
        clipped=clipped,
        support=targets @ w,
        pred_sum=pred.probs @ w,
        class_loss_sum=loss_terms @ w,
        class_kl_sum=kl_terms @ w,
        class_pred_entropy_sum=targets @ (pred_entropy * w),
        class_correct_sum=_bincount(pred_arg, targets[pred_arg, rows] * w, n_classes),
    )


@dataclass
class RowStats:
    """Per-row values (nats) whose weighted means are the aggregate metrics."""

    loss: Floats
    kl: Floats
    target_entropy: Floats
    pred_entropy: Floats
    correct: npt.NDArray[np.bool_]


def row_stats(pred: LogProbs, labels: Ints | None, targets: Floats | None, eps: float) -> RowStats:
    """H(p,q), KL(p‖q), H(p), H(q) and [argmax q = argmax p] for every row."""
    entropy = row_pred_entropy(pred)
    if labels is not None:
        loss = row_losses(pred, labels, None)
        return RowStats(loss, loss, np.zeros_like(loss), entropy, argmax_hits(pred, labels))
    assert targets is not None
    log_p = log_targets(targets)
    correct = pred.probs.argmax(axis=0) == targets.argmax(axis=0)
    return RowStats(row_losses(pred, None, targets), rel_entr_terms(targets, log_p, pred, eps).sum(axis=0),
                    -(targets * log_p).sum(axis=0), entropy, correct)


def row_losses(pred: LogProbs, labels: Ints | None, targets: Floats | None) -> Floats:
    """H(p_i, q_i) per row (nats), for the worst-rows list; a certain, right row's loss is 0, not
    the −0.0 that negating its log q = 0 gives."""
    if labels is not None:
        return 0.0 - pred.log_probs[labels, np.arange(labels.shape[0])]
    assert targets is not None
    with np.errstate(invalid="ignore"):
        return np.where(targets > 0, -targets * pred.log_probs, 0.0).sum(axis=0) + 0.0
