"""The math of SPEC section 1, checked against independent oracles.

Every expected number here comes from scikit-learn (``log_loss``), SciPy (``entropy``,
``rel_entr``, ``xlogy``, ``log_softmax``), ``decimal`` at 50 digits, or a few lines of NumPy
written from the SPEC definitions in this file; never from xent's own earlier output. Each
assert states its tolerance: rtol 1e-9 against an oracle that sums in a different order, 1e-12
for identities that only reorder xent's own float64 sums (chunking, merging, repetition).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, rel_entr, xlogy
from scipy.stats import entropy
from sklearn.metrics import log_loss

from xentcli.core.accumulator import Accumulator, ClassScores, Scores
from xentcli.io.layout import LayoutRequest
from xentcli.pipeline import ScoreOptions, score

EPS = float(np.finfo(np.float64).eps)
RTOL = 1e-9  # against an oracle that adds in another order
RTOL_REORDER = 1e-12  # the same sums, only regrouped (SPEC: chunking, order, merging)
METRICS = ("cross_entropy", "entropy_target", "kl_divergence", "entropy_pred", "prior_entropy",
           "normalized_cross_entropy", "perplexity", "accuracy", "weight_sum")
PER_CLASS = tuple(f.name for f in fields(ClassScores))
PROPERTY = settings(max_examples=50, deadline=None)


# ---------------------------------------------------------------- data


def model_probs(rng: np.random.Generator, n: int, k: int, spread: float = 2.0) -> np.ndarray:
    """Softmax of random logits: (n, k) float64 rows that look like a classifier's output."""
    logits = rng.normal(scale=spread, size=(n, k))
    return np.exp(log_softmax(logits, axis=1))


def sample_labels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """Labels drawn from the predicted distributions (a calibrated model), every class present."""
    cumulative = probs.cumsum(axis=1)
    labels = (rng.random((probs.shape[0], 1)) > cumulative).sum(axis=1)
    labels = np.minimum(labels, probs.shape[1] - 1)
    labels[: probs.shape[1]] = np.arange(probs.shape[1])
    return labels


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[labels]


def accumulate(preds: np.ndarray, *, labels: np.ndarray | None = None, targets: np.ndarray | None = None,
               weights: np.ndarray | None = None, base: str = "e", **kwargs: Any) -> Scores:
    acc = Accumulator(preds.shape[1], **kwargs)
    acc.update(preds, labels=labels, targets=targets, weights=weights)
    return acc.finalize(base)


# ---------------------------------------------------------------- oracles


def oracle(targets: np.ndarray, preds: np.ndarray, weights: np.ndarray | None = None,
           eps: float = EPS) -> dict[str, Any]:
    """SPEC section 1 written out with SciPy's xlogy/rel_entr/entropy, in nats.

    ``targets`` and ``preds`` are (rows, classes); q is clipped up to eps wherever its log is
    taken (eps = 0: no clipping).
    """
    w = np.ones(len(preds)) if weights is None else np.asarray(weights, dtype=float)
    total = w.sum()
    q_log = np.maximum(preds, eps) if eps > 0 else preds
    with np.errstate(divide="ignore"):
        class_loss = -xlogy(targets, q_log)  # (rows, classes) p_ik (−log q_ik)
    class_kl = rel_entr(targets, q_log)
    row_loss = class_loss.sum(axis=1)
    row_pred_entropy = -xlogy(preds, q_log).sum(axis=1)  # H(q), its logs clipped like the loss's
    hits = np.argmax(preds, axis=1)  # NumPy's argmax takes the lowest index on ties (SPEC)
    hit_matrix = one_hot(hits, preds.shape[1])
    support = targets.T @ w
    prior = entropy(support)
    ce = row_loss @ w / total
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = {
            "support": support,
            "share": support / total,
            "mean_pred": preds.T @ w / total,
            "cross_entropy": (class_loss.T @ w) / support,
            "loss_share": (class_loss.T @ w) / (row_loss @ w),
            "kl_divergence": (class_kl.T @ w) / support,
            "entropy_pred": (targets.T @ (w * row_pred_entropy)) / support,
            "accuracy": ((targets * hit_matrix).T @ w) / support,
        }
    return {
        "cross_entropy": ce,
        "entropy_target": entropy(targets, axis=1) @ w / total,
        "kl_divergence": class_kl.sum(axis=1) @ w / total,
        "entropy_pred": row_pred_entropy @ w / total,
        "prior_entropy": prior,
        "normalized_cross_entropy": ce / prior if prior > 0 else None,
        "perplexity": math.exp(ce),
        "accuracy": (hits == targets.argmax(axis=1)) @ w / total,
        "weight_sum": total,
        "per_class": per_class,
    }


def as_float(value: float | None) -> float:
    assert value is not None, "expected a number, got None"
    return value


def assert_close(actual: float | None, expected: float, rtol: float, what: str = "") -> None:
    assert actual is not None, f"{what}: None, expected {expected!r}"
    assert math.isclose(actual, expected, rel_tol=rtol, abs_tol=0.0), \
        f"{what}: {actual!r} != {expected!r} (rtol {rtol})"


def per_class_vector(scores: Scores, key: str) -> np.ndarray:
    return np.array([np.nan if getattr(c, key) is None else getattr(c, key) for c in scores.per_class])


def assert_per_class_matches(scores: Scores, expected: dict[str, np.ndarray], rtol: float,
                             unit: float = 1.0) -> None:
    """Every per-class key against the oracle's vector (rtol ``rtol``); a zero denominator in
    the oracle (nan) must be None in xent."""
    assert len(scores.per_class) == len(expected["support"])
    in_unit = {"cross_entropy", "kl_divergence", "entropy_pred"}
    for key in PER_CLASS:
        want = expected[key] / (unit if key in in_unit else 1.0)
        got = per_class_vector(scores, key)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0, equal_nan=True, err_msg=key)
        for cs, w in zip(scores.per_class, want, strict=True):
            assert (getattr(cs, key) is None) == bool(np.isnan(w)), key


def assert_metrics_match(scores: Scores, expected: dict[str, Any], rtol: float, unit: float = 1.0) -> None:
    for key in METRICS:
        want = expected[key]
        if want is not None and key not in ("normalized_cross_entropy", "perplexity", "accuracy",
                                            "weight_sum"):
            want = want / unit
        if want is None:
            assert getattr(scores, key) is None, key
        elif want == 0:
            assert getattr(scores, key) == 0, f"{key}: {getattr(scores, key)!r} != 0 (exact)"
        else:
            assert_close(getattr(scores, key), want, rtol, key)


def assert_same_scores(a: Scores, b: Scores, rtol: float, *, rows: bool = True) -> None:
    """Two results equal to ``rtol`` relative in every metric and per-class value."""
    for key in METRICS:
        x, y = getattr(a, key), getattr(b, key)
        if x is None or y is None:
            assert x is y, key
        else:
            assert math.isclose(x, y, rel_tol=rtol, abs_tol=1e-300), f"{key}: {x!r} != {y!r} (rtol {rtol})"
    if rows:  # clipped counts (row, class) entries, so it follows the row count
        assert a.rows == b.rows
        assert a.clipped == b.clipped
    for key in PER_CLASS:
        np.testing.assert_allclose(per_class_vector(a, key), per_class_vector(b, key), rtol=rtol,
                                   atol=1e-300, equal_nan=True, err_msg=key)


# ---------------------------------------------------------------- hard labels


@pytest.mark.parametrize("k", [2, 3, 7, 12])
def test_hard_label_cross_entropy_matches_sklearn(k: int) -> None:
    rng = np.random.default_rng(100 + k)
    probs = model_probs(rng, 1500, k)
    labels = sample_labels(rng, probs)
    scores = accumulate(probs, labels=labels)
    assert_close(scores.cross_entropy, log_loss(labels, probs, labels=list(range(k))), RTOL)
    # hard labels: no target entropy, so KL is the cross-entropy itself
    assert scores.entropy_target == 0.0
    assert_close(scores.kl_divergence, as_float(scores.cross_entropy), 1e-15)
    assert scores.rows == 1500
    assert scores.weight_sum == 1500.0
    assert scores.clipped == 0


@pytest.mark.parametrize("k", [2, 5, 12])
def test_weighted_cross_entropy_matches_sklearn_sample_weight(k: int) -> None:
    rng = np.random.default_rng(200 + k)
    probs = model_probs(rng, 900, k)
    labels = sample_labels(rng, probs)
    weights = rng.gamma(0.7, size=900)
    scores = accumulate(probs, labels=labels, weights=weights)
    expected = log_loss(labels, probs, labels=list(range(k)), sample_weight=weights)
    assert_close(scores.cross_entropy, expected, RTOL)
    assert_close(scores.weight_sum, float(weights.sum()), RTOL)


def test_entropy_pred_prior_ne_perplexity_match_scipy() -> None:
    rng = np.random.default_rng(7)
    k = 6
    probs = model_probs(rng, 1200, k)
    labels = sample_labels(rng, probs)
    scores = accumulate(probs, labels=labels)
    ce = log_loss(labels, probs, labels=list(range(k)))
    prior = entropy(np.bincount(labels, minlength=k))
    assert_close(scores.entropy_pred, float(np.mean(entropy(probs, axis=1))), RTOL)
    assert_close(scores.prior_entropy, float(prior), RTOL)
    assert_close(scores.normalized_cross_entropy, ce / prior, RTOL)
    assert_close(scores.perplexity, math.exp(ce), RTOL)
    assert_close(scores.accuracy, float(np.mean(probs.argmax(axis=1) == labels)), 1e-15)


def test_accuracy_ties_go_to_the_lowest_class_index() -> None:
    probs = np.array([
        [0.4, 0.4, 0.2],  # tie 0/1 → predicts 0; label 1: wrong
        [0.2, 0.4, 0.4],  # tie 1/2 → predicts 1; label 1: right
        [0.3, 0.35, 0.35],  # tie 1/2 → predicts 1; label 2: wrong
        [0.25, 0.5, 0.25],  # predicts 1; label 0: wrong
        [1 / 3, 1 / 3, 1 / 3],  # three-way tie → predicts 0; label 0: right
    ])
    labels = np.array([1, 1, 2, 0, 0])
    scores = accumulate(probs, labels=labels)
    assert scores.accuracy == pytest.approx(2 / 5, rel=1e-15)
    # recall per class: class 0 has rows 3, 4 (1 right); class 1 rows 0, 1 (1 right); class 2 row 2
    assert per_class_vector(scores, "accuracy") == pytest.approx([0.5, 0.5, 0.0], rel=1e-15)
    # the same through soft one-hot targets, whose argmax also breaks ties low
    soft = accumulate(probs, targets=one_hot(labels, 3))
    assert soft.accuracy == pytest.approx(2 / 5, rel=1e-15)
    assert per_class_vector(soft, "accuracy") == pytest.approx([0.5, 0.5, 0.0], rel=1e-15)


@pytest.mark.parametrize("weighted", [False, True])
def test_hard_label_per_class_matches_definitions(weighted: bool) -> None:
    rng = np.random.default_rng(11 + weighted)
    k = 5
    probs = model_probs(rng, 1000, k)
    labels = sample_labels(rng, probs)
    weights = rng.uniform(0.1, 3.0, size=1000) if weighted else None
    scores = accumulate(probs, labels=labels, weights=weights)
    expected = oracle(one_hot(labels, k), probs, weights)
    assert_metrics_match(scores, expected, RTOL)
    assert_per_class_matches(scores, expected["per_class"], RTOL)
    if not weighted:  # support is the row count of each class
        assert per_class_vector(scores, "support").tolist() == np.bincount(labels, minlength=k).tolist()
    # the loss shares split the total loss
    assert float(per_class_vector(scores, "loss_share").sum()) == pytest.approx(1.0, rel=1e-12)


def test_class_without_rows_has_null_ratios() -> None:
    """SPEC: a value with a zero denominator is null; class 2 never occurs as a label."""
    rng = np.random.default_rng(3)
    probs = model_probs(rng, 400, 4)
    labels = rng.choice([0, 1, 3], size=400)
    scores = accumulate(probs, labels=labels)
    absent = scores.per_class[2]
    assert absent.support == 0.0
    assert absent.share == 0.0
    assert absent.mean_pred == pytest.approx(float(probs[:, 2].mean()), rel=RTOL)
    assert absent.loss_share == 0.0
    for key in ("cross_entropy", "kl_divergence", "entropy_pred", "accuracy"):
        assert getattr(absent, key) is None, key
    assert_close(scores.cross_entropy, log_loss(labels, probs, labels=[0, 1, 2, 3]), RTOL)
    assert_close(scores.prior_entropy, float(entropy(np.bincount(labels, minlength=4))), RTOL)


@pytest.mark.parametrize(("base", "unit"), [("2", math.log(2)), ("10", math.log(10))])
def test_base_2_and_10_divide_by_log_of_base(base: str, unit: float) -> None:
    rng = np.random.default_rng(21)
    k = 4
    probs = model_probs(rng, 800, k)
    labels = sample_labels(rng, probs)
    scores = accumulate(probs, labels=labels, base=base)
    ce_nats = log_loss(labels, probs, labels=list(range(k)))
    assert_close(scores.cross_entropy, ce_nats / unit, RTOL)
    assert_close(scores.perplexity, math.exp(ce_nats), RTOL)  # nats whatever the base
    expected = oracle(one_hot(labels, k), probs)
    assert_metrics_match(scores, expected, RTOL, unit=unit)
    assert_per_class_matches(scores, expected["per_class"], RTOL, unit=unit)


# ---------------------------------------------------------------- soft targets


def test_soft_targets_match_scipy() -> None:
    rng = np.random.default_rng(31)
    n, k = 1000, 7
    probs = model_probs(rng, n, k)
    targets = rng.dirichlet(np.full(k, 0.5), size=n)
    targets[:50, 3] = 0.0  # some exact zeros in p: 0·log 0 = 0
    targets[:50] /= targets[:50].sum(axis=1, keepdims=True)
    scores = accumulate(probs, targets=targets)
    ce = float(-xlogy(targets, probs).sum() / n)
    h = float(np.mean(entropy(targets, axis=1)))
    kl = float(rel_entr(targets, probs).sum() / n)
    assert_close(scores.cross_entropy, ce, RTOL)
    assert_close(scores.entropy_target, h, RTOL)
    assert_close(scores.kl_divergence, kl, RTOL)
    assert as_float(scores.kl_divergence) >= 0
    assert_close(as_float(scores.entropy_target) + as_float(scores.kl_divergence),
                 as_float(scores.cross_entropy), 1e-12)
    expected = oracle(targets, probs)
    assert_metrics_match(scores, expected, RTOL)
    assert_per_class_matches(scores, expected["per_class"], RTOL)


def test_soft_targets_weighted_per_class() -> None:
    rng = np.random.default_rng(32)
    n, k = 700, 4
    probs = model_probs(rng, n, k)
    targets = rng.dirichlet(np.ones(k), size=n)
    weights = rng.exponential(size=n)
    scores = accumulate(probs, targets=targets, weights=weights)
    expected = oracle(targets, probs, weights)
    assert_metrics_match(scores, expected, RTOL)
    assert_per_class_matches(scores, expected["per_class"], RTOL)


def _exact_grid(p: np.ndarray) -> np.ndarray:
    """Rows on the 2**-53 grid, whose float64 sum is exactly 1 (the last, largest class takes up
    the rest), so the exact KL below is the KL of true distributions."""
    scaled = np.round(p * 2.0**53).astype(np.int64)
    scaled[:, -1] = 2**53 - scaled[:, :-1].sum(axis=1)
    assert (scaled > 0).all()
    return scaled


def test_kl_stays_accurate_when_prediction_is_close_to_target() -> None:
    """SPEC: KL is computed in a form that stays accurate when p ≈ q; checked against the exact
    Σ p log(p/q) of the same float64 numbers in 50-digit decimal arithmetic."""
    rng = np.random.default_rng(41)
    n, k = 200, 6
    base = model_probs(rng, n, k, spread=1.0)
    base = base[np.arange(n)[:, None], np.argsort(base, axis=1)]  # largest class last
    p_int = _exact_grid(base)
    q_float = p_int * (1.0 + 1e-9 * rng.standard_normal((n, k)))
    q_int = _exact_grid(q_float / 2.0**53)
    p = p_int / 2.0**53
    q = q_int / 2.0**53
    assert (p.sum(axis=1) == 1.0).all() and (q.sum(axis=1) == 1.0).all()

    with localcontext() as ctx:
        ctx.prec = 50
        exact = sum(
            (Decimal(int(a)) / Decimal(2**53)) * (Decimal(int(a)) / Decimal(int(b))).ln()
            for row_p, row_q in zip(p_int.tolist(), q_int.tolist(), strict=True)
            for a, b in zip(row_p, row_q, strict=True)
        ) / n
    reference = float(exact)
    assert 0 < reference < 1e-16  # second order in the 1e-9 perturbation

    scores = accumulate(q, targets=p)
    # rtol 1e-6: adding the first-order d = p − q back per entry costs ~1e-16/|t| relative
    assert_close(scores.kl_divergence, reference, 1e-6, "kl_divergence")
    # the naive p·log(p/q) is far off here, so this test tells an accurate form from it
    naive = float((p * np.log(p / q)).sum() / n)
    assert abs(naive - reference) > 1e-3 * reference


def test_kl_is_zero_when_prediction_equals_target() -> None:
    rng = np.random.default_rng(42)
    probs = model_probs(rng, 500, 5)
    scores = accumulate(probs, targets=probs)
    assert abs(as_float(scores.kl_divergence)) <= 1e-15
    assert_close(scores.cross_entropy, float(np.mean(entropy(probs, axis=1))), RTOL)


@pytest.mark.parametrize("scale", ["probs", "logits"])
@pytest.mark.parametrize("tiny", [1e-20, 1e-300, 1e-310])
def test_tiny_target_entries_keep_kl_finite(scale: str, tiny: float) -> None:
    """A soft target with an entry far below the prediction (a distilled teacher's tail):
    rel_entr(tiny, q) ≈ 0, so KL stays finite and equals SciPy's, and CE = H + KL."""
    targets = np.array([[tiny, 1.0 - tiny, 0.0], [0.3, 0.3, 0.4], [0.1, tiny, 0.9 - tiny]])
    probs = np.array([[0.5, 0.25, 0.25], [0.2, 0.5, 0.3], [0.2, 0.6, 0.2]])
    preds = np.log(probs) if scale == "logits" else probs
    scores = accumulate(preds, targets=targets, scale=scale)
    assert_close(scores.kl_divergence, float(rel_entr(targets, probs).sum() / 3), RTOL, "kl_divergence")
    assert_close(scores.cross_entropy, float(-xlogy(targets, probs).sum() / 3), RTOL, "cross_entropy")
    assert_close(scores.entropy_target, float(np.mean(entropy(targets, axis=1))), RTOL, "entropy_target")


# ---------------------------------------------------------------- logits and log-probabilities


def test_logits_match_scipy_log_softmax() -> None:
    rng = np.random.default_rng(51)
    n, k = 1000, 9
    logits = rng.normal(scale=3.0, size=(n, k)) + rng.normal(scale=50.0, size=(n, 1))  # shifted rows
    log_q = log_softmax(logits, axis=1)
    labels = sample_labels(rng, np.exp(log_q))
    scores = accumulate(logits, labels=labels, scale="logits")
    assert_close(scores.cross_entropy, float(-log_q[np.arange(n), labels].mean()), RTOL)
    assert_close(scores.cross_entropy, log_loss(labels, np.exp(log_q), labels=list(range(k))), RTOL)
    assert_close(scores.entropy_pred, float(np.mean(-(np.exp(log_q) * log_q).sum(axis=1))), RTOL)
    assert scores.clipped == 0
    expected = oracle(one_hot(labels, k), np.exp(log_q))
    assert_per_class_matches(scores, expected["per_class"], RTOL)

    targets = rng.dirichlet(np.ones(k), size=n)
    soft = accumulate(logits, targets=targets, scale="logits")
    assert_close(soft.cross_entropy, float(-(targets * log_q).sum() / n), RTOL)
    kl = float((xlogy(targets, targets) - targets * log_q).sum() / n)
    assert_close(soft.kl_divergence, kl, RTOL)


def test_extreme_logits_give_finite_exact_losses() -> None:
    logits = np.array([
        [1e4, -1e4, 0.0],
        [1e4, -1e4, 0.0],
        [-1e4, 1e4, 1e4 - 1.0],
        [-1e4, -1e4, -1e4],
    ])
    labels = np.array([0, 1, 2, 2])
    log_q = log_softmax(logits, axis=1)
    # by hand: row 0 loses 0 (to 1e-4343), row 1 loses 2e4, row 2 loses 1 + log(1 + e^-1) = log(1 + e),
    # row 3 loses log 3
    assert log_q[1, 1] == -2e4
    scores = accumulate(logits, labels=labels, scale="logits")
    expected_rows = -log_q[np.arange(4), labels]
    assert np.isfinite(expected_rows).all()
    assert_close(scores.cross_entropy, float(expected_rows.mean()), 1e-12)
    assert_close(per_class_vector(scores, "cross_entropy")[1], 2e4, 1e-15)
    assert_close(per_class_vector(scores, "cross_entropy")[2],
                 float((math.log1p(math.e) + math.log(3)) / 2), 1e-12)
    assert scores.perplexity == math.inf  # exp(5000) overflows: reported as inf, not an error
    q = np.exp(log_q)
    assert_close(scores.entropy_pred, float(np.mean(entropy(q, axis=1))), 1e-12)
    # only row 0 is right; row 3 is a three-way tie → class 0, but its label is 2
    assert scores.accuracy == pytest.approx(0.25, rel=1e-15)

    targets = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.25, 0.75], [0.2, 0.3, 0.5]])
    soft = accumulate(logits, targets=targets, scale="logits")
    assert_close(soft.cross_entropy, float(-np.where(targets > 0, targets * log_q, 0.0).sum() / 4), 1e-12)
    kl_rows = (xlogy(targets, targets) - np.where(targets > 0, targets * log_q, 0)).sum(axis=1)
    assert np.isfinite(kl_rows).all()
    assert_close(soft.kl_divergence, float(kl_rows.mean()), 1e-12)


def test_logprobs_scale_uses_the_logs_exactly() -> None:
    rng = np.random.default_rng(61)
    n, k = 800, 5
    log_q = log_softmax(rng.normal(scale=2.0, size=(n, k)), axis=1)
    labels = sample_labels(rng, np.exp(log_q))
    log_q[0] = log_softmax(np.array([800.0, 0.0, 0.0, 0.0, 0.0]))  # q below the smallest double
    labels[0] = 1
    scores = accumulate(log_q, labels=labels, scale="logprobs")
    losses = -log_q[np.arange(n), labels]
    assert losses[0] == pytest.approx(800.0, rel=1e-15)
    assert_close(scores.cross_entropy, float(losses.mean()), RTOL)
    assert scores.clipped == 0  # nothing is clipped on the logprobs scale
    expected = oracle(one_hot(labels, k), np.exp(log_q), eps=0.0)
    assert_close(scores.entropy_pred, expected["entropy_pred"], RTOL)
    assert_close(scores.accuracy, expected["accuracy"], 1e-15)


# ---------------------------------------------------------------- eps and clipping


def test_zero_probability_on_true_class_is_clipped_to_eps() -> None:
    rng = np.random.default_rng(71)
    n, k = 300, 3
    probs = model_probs(rng, n, k)
    labels = sample_labels(rng, probs)
    labels[:6] = 0
    probs[0] = [0.0, 0.5, 0.5]  # true class 0 at 0: clipped
    probs[1] = [1e-300, 0.5, 0.5 - 1e-300]  # below eps: clipped
    probs[2] = [EPS / 2, 0.6, 0.4 - EPS / 2]  # below eps: clipped
    probs[3] = [EPS, 0.6, 0.4 - EPS]  # exactly eps: not below, not clipped
    probs[4] = [1.0, 0.0, 0.0]  # zeros on other classes: not counted
    probs[5] = [0.5, 0.5, 0.0]
    scores = accumulate(probs, labels=labels)
    assert scores.clipped == 3
    losses = -np.log(np.maximum(probs[np.arange(n), labels], EPS))
    assert losses[0] == -math.log(EPS)
    assert_close(scores.cross_entropy, float(losses.mean()), RTOL)
    assert_close(scores.cross_entropy, log_loss(labels, probs, labels=[0, 1, 2]), RTOL)
    assert np.isfinite(as_float(scores.entropy_pred))
    assert_close(scores.entropy_pred, float(np.mean(entropy(probs, axis=1))), RTOL)


def test_custom_eps_and_soft_clipped_count() -> None:
    rng = np.random.default_rng(72)
    n, k = 400, 4
    probs = model_probs(rng, n, k, spread=6.0)  # many entries below 1e-6
    targets = rng.dirichlet(np.ones(k), size=n)
    targets[:100, 0] = 0.0
    targets[:100] /= targets[:100].sum(axis=1, keepdims=True)
    eps = 1e-6
    scores = accumulate(probs, targets=targets, eps=eps)
    assert scores.clipped == int(((probs < eps) & (targets > 0)).sum())
    assert scores.clipped > 10
    expected = oracle(targets, probs, eps=eps)
    assert_close(scores.cross_entropy, expected["cross_entropy"], RTOL)
    assert_close(scores.kl_divergence, expected["kl_divergence"], RTOL)
    assert_close(as_float(scores.entropy_target) + as_float(scores.kl_divergence),
                 as_float(scores.cross_entropy), 1e-12)


def test_eps_zero_reports_infinite_loss() -> None:
    probs = np.array([[0.0, 0.5, 0.5], [0.7, 0.2, 0.1], [0.1, 0.0, 0.9]])
    labels = np.array([0, 0, 2])
    scores = accumulate(probs, labels=labels, eps=0.0)
    assert scores.cross_entropy == math.inf
    assert scores.kl_divergence == math.inf
    assert scores.perplexity == math.inf
    assert scores.clipped == 0
    assert per_class_vector(scores, "cross_entropy")[0] == math.inf
    # class 2 is finite: only −log 0.9
    assert_close(per_class_vector(scores, "cross_entropy")[2], -math.log(0.9), 1e-15)
    # 0·log 0 = 0 in the model's entropy, so it stays finite
    assert_close(scores.entropy_pred, float(np.mean(entropy(probs, axis=1))), RTOL)

    targets = np.array([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [0.5, 0.0, 0.5]])
    soft = accumulate(probs, targets=targets, eps=0.0)
    assert soft.cross_entropy == math.inf and soft.kl_divergence == math.inf
    # a zero in q where p is 0 costs nothing: rows 1 and 2 alone are finite
    finite = accumulate(probs[1:], targets=targets[1:], eps=0.0)
    assert_close(finite.kl_divergence, float(rel_entr(targets[1:], probs[1:]).sum() / 2), RTOL)


# ---------------------------------------------------------------- weights


def test_zero_weights_are_dropped_rows() -> None:
    rng = np.random.default_rng(81)
    n, k = 600, 5
    probs = model_probs(rng, n, k)
    labels = sample_labels(rng, probs)
    weights = rng.uniform(0.5, 2.0, size=n)
    weights[rng.random(n) < 0.3] = 0.0
    keep = weights > 0
    with_zeros = accumulate(probs, labels=labels, weights=weights)
    dropped = accumulate(probs[keep], labels=labels[keep], weights=weights[keep])
    assert_same_scores(with_zeros, dropped, RTOL_REORDER, rows=False)

    targets = rng.dirichlet(np.ones(k), size=n)
    assert_same_scores(accumulate(probs, targets=targets, weights=weights),
                       accumulate(probs[keep], targets=targets[keep], weights=weights[keep]),
                       RTOL_REORDER, rows=False)


def test_zero_weight_row_with_infinite_loss_is_dropped() -> None:
    """eps 0 and a zero-weight row whose true class has q = 0: 0·∞ is a dropped row, not NaN."""
    probs = np.array([[0.0, 1.0], [0.8, 0.2], [0.3, 0.7]])
    labels = np.array([0, 0, 1])
    weights = np.array([0.0, 1.0, 2.0])
    scores = accumulate(probs, labels=labels, weights=weights, eps=0.0)
    expected = (-math.log(0.8) - 2 * math.log(0.7)) / 3
    assert_close(scores.cross_entropy, expected, 1e-15, "cross_entropy")
    dropped = accumulate(probs[1:], labels=labels[1:], weights=weights[1:], eps=0.0)
    assert_same_scores(scores, dropped, RTOL_REORDER, rows=False)


def test_integer_weights_equal_repeated_rows() -> None:
    rng = np.random.default_rng(82)
    n, k = 500, 6
    probs = model_probs(rng, n, k)
    labels = sample_labels(rng, probs)
    counts = rng.integers(1, 5, size=n)
    weighted = accumulate(probs, labels=labels, weights=counts.astype(float))
    repeated = accumulate(np.repeat(probs, counts, axis=0), labels=np.repeat(labels, counts))
    assert_same_scores(weighted, repeated, RTOL_REORDER, rows=False)
    assert repeated.rows == int(counts.sum())

    targets = rng.dirichlet(np.ones(k), size=n)
    assert_same_scores(accumulate(probs, targets=targets, weights=counts),
                       accumulate(np.repeat(probs, counts, axis=0),
                                  targets=np.repeat(targets, counts, axis=0)),
                       RTOL_REORDER, rows=False)


# ---------------------------------------------------------------- properties (Hypothesis)

seeds = st.integers(0, 2**32 - 1)
class_counts = st.integers(2, 12)
row_counts = st.integers(20, 600)


@st.composite
def batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(preds, labels, targets, weights): hard or soft, weighted or not."""
    rng = np.random.default_rng(draw(seeds))
    n, k = draw(row_counts), draw(class_counts)
    probs = model_probs(rng, n, k, spread=draw(st.sampled_from([0.5, 2.0, 8.0])))
    soft = draw(st.booleans())
    labels = None if soft else sample_labels(rng, probs)
    targets = rng.dirichlet(np.full(k, 0.7), size=n) if soft else None
    weights = rng.exponential(size=n) if draw(st.booleans()) else None
    return probs, labels, targets, weights


@PROPERTY
@given(batches(), st.data())
def test_merge_of_split_parts_equals_whole(batch: Any, data: st.DataObject) -> None:
    probs, labels, targets, weights = batch
    n, k = probs.shape
    cut = data.draw(st.integers(0, n), label="cut")

    def part(rows: slice) -> Accumulator:
        acc = Accumulator(k)
        acc.update(probs[rows], labels=None if labels is None else labels[rows],
                   targets=None if targets is None else targets[rows],
                   weights=None if weights is None else weights[rows])
        return acc

    whole = part(slice(None)).finalize()
    merged = part(slice(0, cut)).merge(part(slice(cut, n))).finalize()
    assert_same_scores(merged, whole, RTOL_REORDER)


@PROPERTY
@given(batches(), seeds)
def test_row_order_does_not_matter(batch: Any, seed: int) -> None:
    probs, labels, targets, weights = batch
    order = np.random.default_rng(seed).permutation(len(probs))
    original = accumulate(probs, labels=labels, targets=targets, weights=weights)
    shuffled = accumulate(probs[order], labels=None if labels is None else labels[order],
                          targets=None if targets is None else targets[order],
                          weights=None if weights is None else weights[order])
    assert_same_scores(shuffled, original, RTOL_REORDER)


@PROPERTY
@given(seeds, class_counts, row_counts, st.sampled_from([0.0, 1e-12, 1e-6, 1e-2, 1.0]))
def test_cross_entropy_is_entropy_plus_kl(seed: int, k: int, n: int, distance: float) -> None:
    rng = np.random.default_rng(seed)
    targets = model_probs(rng, n, k, spread=3.0)
    targets[rng.random((n, k)) < 0.1] = 0.0  # zeros in p
    targets[:, 0] += (targets.sum(axis=1) == 0)
    targets /= targets.sum(axis=1, keepdims=True)
    probs = targets * np.exp(distance * rng.standard_normal((n, k))) + 1e-3 * (distance > 0)
    probs /= probs.sum(axis=1, keepdims=True)
    scores = accumulate(probs, targets=targets)
    ce, h, kl = (as_float(scores.cross_entropy), as_float(scores.entropy_target),
                 as_float(scores.kl_divergence))
    assert kl >= -1e-15
    assert math.isclose(ce, h + kl, rel_tol=1e-12, abs_tol=0.0)
    # per class, KL is a sum of rel_entr terms, which may be negative; they add up to the total
    class_kl = per_class_vector(scores, "kl_divergence") * per_class_vector(scores, "support")
    assert math.isclose(float(np.nansum(class_kl)) / n, kl, rel_tol=1e-9, abs_tol=1e-15)
    assert_close(h, float(np.mean(entropy(targets, axis=1))), RTOL)


@PROPERTY
@given(seeds, class_counts, row_counts, st.booleans())
def test_predicting_the_prior_gives_ne_one(seed: int, k: int, n: int, weighted: bool) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    labels[:2] = [0, 1]  # at least two classes: prior entropy > 0
    weights = rng.uniform(0.1, 5.0, size=n) if weighted else np.ones(n)
    prior = np.bincount(labels, weights=weights, minlength=k) / weights.sum()
    probs = np.tile(prior, (n, 1))
    scores = accumulate(probs, labels=labels, weights=weights if weighted else None)
    assert_close(scores.normalized_cross_entropy, 1.0, RTOL)
    assert_close(scores.prior_entropy, float(entropy(prior)), RTOL)
    assert_close(scores.cross_entropy, float(entropy(prior)), RTOL)


@PROPERTY
@given(batches(), st.integers(1, 4))
def test_integer_weights_equal_repetition_property(batch: Any, top: int) -> None:
    probs, labels, targets, _ = batch
    counts = np.random.default_rng(len(probs) * top).integers(1, top + 1, size=len(probs))
    weighted = accumulate(probs, labels=labels, targets=targets, weights=counts.astype(float))
    repeated = accumulate(np.repeat(probs, counts, axis=0),
                          labels=None if labels is None else np.repeat(labels, counts),
                          targets=None if targets is None else np.repeat(targets, counts, axis=0))
    assert_same_scores(weighted, repeated, RTOL_REORDER, rows=False)


def write_parquet(path: Path, probs: np.ndarray, labels: np.ndarray, names: Sequence[str],
                  row_group_size: int | None = None, weights: np.ndarray | None = None) -> Path:
    columns: dict[str, Any] = {f"p_{name}": probs[:, j] for j, name in enumerate(names)}
    columns["label"] = pa.array([names[i] for i in labels], type=pa.string())
    if weights is not None:
        columns["w"] = weights
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def metrics_of(path: Path, **options: Any) -> dict[str, Any]:
    return score([str(path)], ScoreOptions(**options)).to_dict()


def assert_same_reports(a: dict[str, Any], b: dict[str, Any], rtol: float) -> None:
    for key in METRICS:
        x, y = a["metrics"][key], b["metrics"][key]
        assert (x is None) == (y is None), key
        if x is not None:
            assert math.isclose(x, y, rel_tol=rtol, abs_tol=1e-300), f"{key}: {x!r} != {y!r}"
    assert a["rows"] == b["rows"]
    for ca, cb in zip(a["per_class"], b["per_class"], strict=True):
        assert ca["class"] == cb["class"]
        for key in PER_CLASS:
            x, y = ca[key], cb[key]
            assert (x is None) == (y is None), key
            if x is not None:
                assert math.isclose(x, y, rel_tol=rtol, abs_tol=1e-300), f"{ca['class']} {key}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds, st.integers(2, 8), st.integers(50, 400), st.integers(1, 450), st.integers(1, 450),
       st.booleans())
def test_chunk_size_does_not_change_the_report(tmp_path: Path, seed: int, k: int, n: int,
                                               chunk: int, group: int, weighted: bool) -> None:
    rng = np.random.default_rng(seed)
    probs = model_probs(rng, n, k)
    labels = sample_labels(rng, probs)
    weights = rng.uniform(0.0, 3.0, size=n) if weighted else None
    names = [f"c{j}" for j in range(k)]
    path = write_parquet(tmp_path / "chunks.parquet", probs, labels, names, row_group_size=group,
                         weights=weights)
    layout = LayoutRequest(weight="w") if weighted else LayoutRequest()
    one_chunk = metrics_of(path, chunk_rows=10_000, layout=layout)
    chunked = metrics_of(path, chunk_rows=chunk, layout=layout)
    assert_same_reports(chunked, one_chunk, RTOL_REORDER)
    expected = log_loss(labels, probs, labels=list(range(k)), sample_weight=weights)
    assert_close(chunked["metrics"]["cross_entropy"], expected, RTOL)


# ---------------------------------------------------------------- through files


ANIMALS = ["cat", "dog", "bird"]


def _animal_data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = model_probs(rng, n, 3)
    labels = sample_labels(rng, probs)
    weights = rng.uniform(0.2, 4.0, size=n)
    return probs, labels, weights


def assert_report_per_class(report: dict[str, Any], expected: dict[str, np.ndarray], rtol: float) -> None:
    assert [c["class"] for c in report["per_class"]] == ANIMALS
    for key in PER_CLASS:
        got = np.array([c[key] for c in report["per_class"]], dtype=float)
        np.testing.assert_allclose(got, expected[key], rtol=rtol, atol=0, err_msg=key)


@pytest.mark.parametrize("weighted", [False, True])
def test_csv_wide_columns_with_text_labels(tmp_path: Path, weighted: bool) -> None:
    probs, labels, weights = _animal_data(91, 1200)
    columns: dict[str, Any] = {f"p_{name}": probs[:, j] for j, name in enumerate(ANIMALS)}
    columns["label"] = pa.array([ANIMALS[i] for i in labels])
    if weighted:  # a numeric column that is not --weight would be read as a prediction
        columns["w"] = weights
    path = tmp_path / "preds.csv"
    pacsv.write_csv(pa.table(columns), path)
    back = pacsv.read_csv(path)
    assert np.array_equal(back.column("p_dog").to_numpy(), probs[:, 1])  # the CSV round-trips exactly

    layout = LayoutRequest(weight="w") if weighted else LayoutRequest()
    report = metrics_of(path, chunk_rows=500, layout=layout)
    w = weights if weighted else None
    assert report["layout"]["classes"] == ANIMALS
    assert report["rows"]["scored"] == 1200
    assert_close(report["metrics"]["cross_entropy"],
                 log_loss(labels, probs, labels=[0, 1, 2], sample_weight=w), RTOL)
    expected = oracle(one_hot(labels, 3), probs, w)
    for key in METRICS:
        want = 0.0 if key == "entropy_target" else expected[key]
        if want == 0.0:
            assert report["metrics"][key] == 0.0, key
        else:
            assert_close(report["metrics"][key], want, RTOL, key)
    assert_report_per_class(report, expected["per_class"], RTOL)


def test_parquet_wide_columns_base_2(tmp_path: Path) -> None:
    probs, labels, _ = _animal_data(92, 2000)
    path = write_parquet(tmp_path / "preds.parquet", probs, labels, ANIMALS, row_group_size=300)
    report = metrics_of(path, base="2", chunk_rows=512)
    assert report["unit"] == "bits"
    ce_nats = log_loss(labels, probs, labels=[0, 1, 2])
    assert_close(report["metrics"]["cross_entropy"], ce_nats / math.log(2), RTOL)
    assert_close(report["metrics"]["perplexity"], math.exp(ce_nats), RTOL)
    expected = oracle(one_hot(labels, 3), probs)["per_class"]
    for key in ("cross_entropy", "kl_divergence", "entropy_pred"):
        expected[key] = expected[key] / math.log(2)
    assert_report_per_class(report, expected, RTOL)


def test_parquet_list_column_with_classes(tmp_path: Path) -> None:
    probs, labels, _ = _animal_data(93, 1500)
    table = pa.table({
        "probs": pa.array(probs.tolist(), type=pa.list_(pa.float64())),
        "label": pa.array([ANIMALS[i] for i in labels]),
    })
    path = tmp_path / "lists.parquet"
    pq.write_table(table, path, row_group_size=400)
    report = metrics_of(path, layout=LayoutRequest(classes=ANIMALS), chunk_rows=333)
    assert report["layout"]["pred_columns"] == ["probs"]
    assert_close(report["metrics"]["cross_entropy"], log_loss(labels, probs, labels=[0, 1, 2]), RTOL)
    expected = oracle(one_hot(labels, 3), probs)
    assert_close(report["metrics"]["prior_entropy"], expected["prior_entropy"], RTOL)
    assert_close(report["metrics"]["accuracy"], expected["accuracy"], 1e-15)
    assert_report_per_class(report, expected["per_class"], RTOL)


def test_parquet_soft_targets(tmp_path: Path) -> None:
    rng = np.random.default_rng(94)
    n = 900
    probs = model_probs(rng, n, 3)
    targets = rng.dirichlet(np.ones(3), size=n)
    columns: dict[str, Any] = {f"t_{name}": targets[:, j] for j, name in enumerate(ANIMALS)}
    columns.update({f"p_{name}": probs[:, j] for j, name in enumerate(ANIMALS)})
    path = tmp_path / "soft.parquet"
    pq.write_table(pa.table(columns), path)
    report = metrics_of(path, layout=LayoutRequest(target="t_cat,t_dog,t_bird",
                                                   pred="p_cat,p_dog,p_bird"), chunk_rows=256)
    expected = oracle(targets, probs)
    assert_close(report["metrics"]["cross_entropy"], float(-xlogy(targets, probs).sum() / n), RTOL)
    assert_close(report["metrics"]["entropy_target"], float(np.mean(entropy(targets, axis=1))), RTOL)
    assert_close(report["metrics"]["kl_divergence"], float(rel_entr(targets, probs).sum() / n), RTOL)
    assert_report_per_class(report, expected["per_class"], RTOL)


def test_eps_zero_infinite_loss_is_null_in_the_report(tmp_path: Path) -> None:
    probs = np.array([[0.0, 0.5, 0.5], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6]])
    path = write_parquet(tmp_path / "inf.parquet", probs, np.array([0, 0, 2]), ANIMALS)
    report = metrics_of(path, eps=0.0)
    assert report["metrics"]["cross_entropy"] is None
    assert report["metrics"]["perplexity"] is None
    assert report["per_class"][0]["cross_entropy"] is None
    assert_close(report["per_class"][2]["cross_entropy"], -math.log(0.6), 1e-15)
    clipped = metrics_of(path)  # default eps: finite, one clipped entry
    assert clipped["rows"]["clipped"] == 1
    assert_close(clipped["metrics"]["cross_entropy"],
                 (-math.log(EPS) - math.log(0.7) - math.log(0.6)) / 3, RTOL)


@pytest.mark.parametrize("eps", [EPS, 0.0, 1e-3])
@pytest.mark.parametrize(("chunk_rows", "math_rows"), [(50, None), (200, 50)])
def test_clipping_decided_per_block_with_skipped_rows(tmp_path: Path, eps: float, chunk_rows: int,
                                                      math_rows: int | None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The scorer decides whether a block needs clipping from a lower bound of its values: the
    smallest one validation saw in it, or (200-row batches cut in blocks of 50) the smallest of
    the whole batch, found on the reader thread. Blocks of 50 rows: one has a zero on a true
    class, one has zeros only on other classes, one has its only zero in an invalid row
    (skipped) and one has none. Oracle: the SPEC formulas with SciPy on the valid rows, and
    sklearn's log_loss where eps > 0."""
    from xentcli import stream

    if math_rows is not None:
        monkeypatch.setattr(stream, "MATH_BLOCK_ROWS", math_rows)
    rng = np.random.default_rng(97)
    n, k = 200, 3
    probs = model_probs(rng, n, k, spread=1.0)
    labels = sample_labels(rng, probs)
    probs[3] = [0.0, 0.5, 0.5]
    labels[3] = 0  # block 1: zero on the true class
    probs[60] = [1.0, 0.0, 0.0]
    labels[60] = 0  # block 2: zeros elsewhere only
    probs[120] = [0.0, 0.2, 0.2]  # block 3: the zero is in a row whose sum is off: skipped
    valid = np.ones(n, dtype=bool)
    valid[120] = False
    path = write_parquet(tmp_path / "p.parquet", probs, labels, ["a", "b", "c"])
    report = metrics_of(path, eps=eps, chunk_rows=chunk_rows, on_invalid="skip")
    assert report["rows"]["skipped"] == 1
    expected = oracle(one_hot(labels[valid], k), probs[valid], eps=eps)
    got = report["metrics"]
    if eps == 0.0:  # log 0 on a true class: an infinite loss, null in JSON
        assert got["cross_entropy"] is None and got["kl_divergence"] is None
    else:
        assert_close(got["cross_entropy"], expected["cross_entropy"], RTOL)
    if eps == EPS:
        assert_close(got["cross_entropy"], log_loss(labels[valid], probs[valid], labels=[0, 1, 2]), RTOL)
    for key in ("entropy_pred", "accuracy", "prior_entropy"):
        assert_close(got[key], expected[key], RTOL, key)
    true_q = probs[valid][np.arange(valid.sum()), labels[valid]]
    assert report["rows"]["clipped"] == int((true_q < eps).sum())
    if eps == EPS:
        assert report["rows"]["clipped"] == 1  # row 3 only (the zero in row 120 was skipped)
    if eps == 0.0:
        assert report["rows"]["clipped"] == 0


@given(st.integers(1, 4), st.integers(1, 30), st.sampled_from([0.0, 1e-12, 1e-3, 0.25, 0.75]),
       st.booleans(), st.booleans(), st.data())
@settings(max_examples=400, deadline=None)
def test_row_checks_match_their_definition(n_classes: int, n_rows: int, sum_tol: float,
                                           renormalize: bool, with_bounds: bool,
                                           data: st.DataObject) -> None:
    """Validation of probability rows (which decides a clean block from the smallest and largest
    row sums alone) against the definition applied row by row with NumPy: every value in [0, 1]
    (any finite value >= 0 with --renormalize) and |sum − 1| <= --sum-tol (sum > 0), and a row
    with a null cell reported as such. Rows are drawn to sit exactly on and next to the tolerance
    edges, and with NaN, inf and negatives."""
    from xentcli.core.validate import NOT_FINITE, NULL, OUT_OF_RANGE, SUM_OFF, Tolerance, check_rows

    edges = [0.0, 1.0, 0.5, -0.0, math.nan, math.inf, -1e-300, 1.0 + sum_tol, 1.0 - sum_tol,
             float(np.nextafter(1.0 + sum_tol, 2)), float(np.nextafter(1.0 - sum_tol, 0))]
    if data.draw(st.booleans()):  # anything, edges included
        value = st.one_of(st.sampled_from(edges), st.floats(0, 1), st.floats(-2, 2))
        values = np.array([data.draw(st.lists(value, min_size=n_classes, max_size=n_classes))
                           for _ in range(n_rows)]).T
    else:  # valid values whose row sums sit on, or an ulp or so off, the tolerance edges
        small = st.floats(0, 0.5 / n_classes)
        values = np.array([data.draw(st.lists(small, min_size=n_classes, max_size=n_classes))
                           for _ in range(n_rows)]).T
        targets = np.array([data.draw(st.sampled_from([1.0, *edges[7:]])) for _ in range(n_rows)])
        values[-1] = np.maximum(targets - values[:-1].sum(axis=0), 0.0)
    tol = Tolerance(sum_tol, renormalize)
    top = np.finfo(np.float64).max if renormalize else 1.0
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(values).all(axis=0)
        in_range = ((values >= 0) & (values <= top)).all(axis=0)
        sums = values.sum(axis=0)
        sums_ok = (sums > 0) if renormalize else (np.abs(sums - 1.0) <= sum_tol)
        bounds = (float(values.min()), float(values.max())) if with_bounds else None
        nulls = np.array(data.draw(st.lists(st.booleans(), min_size=n_rows, max_size=n_rows)))
        nulls = nulls if data.draw(st.booleans()) else None  # null cells, as decoding marks them
        got = check_rows(values, nulls, "probs", None, None, None, None, None, tol, bounds)
    expected = np.where(~finite, NOT_FINITE, np.where(~in_range, OUT_OF_RANGE,
                                                      np.where(~sums_ok, SUM_OFF, 0)))
    if nulls is not None:
        expected[nulls] = NULL
    assert np.array_equal(np.zeros(n_rows) if got is None else got, expected)


def test_negative_zero_and_float32_ones_are_valid(tmp_path: Path) -> None:
    """−0.0 is a valid probability of 0 (the bit test on the reader sends the batch to full
    validation, which accepts it); a float32 1.0 and 0.0 with their rows' log loss. Oracle:
    sklearn's log_loss and SciPy's entropy on the same float32 values."""
    probs = np.array([[1.0, -0.0, 0.0], [0.25, 0.25, 0.5], [0.0, 1.0, -0.0], [0.1, 0.2, 0.7]],
                     dtype=np.float32)
    labels = np.array([0, 2, 1, 2])
    path = write_parquet(tmp_path / "f32.parquet", probs, labels, ["a", "b", "c"])
    report = metrics_of(path)
    assert report["rows"]["scored"] == 4
    wide = probs.astype(np.float64)
    assert_close(report["metrics"]["cross_entropy"], log_loss(labels, wide, labels=[0, 1, 2]), RTOL)
    assert_close(report["metrics"]["entropy_pred"], float(np.mean(entropy(np.abs(wide), axis=1))), RTOL)


@pytest.mark.parametrize("weighting", ["none", "positive", "some_zero", "zero_in_one_block"])
@pytest.mark.parametrize("eps", [EPS, 1e-3])
def test_group_statistics_match_the_oracle_per_group(tmp_path: Path, weighting: str, eps: float,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every metric and per-class value of every group (two --by columns, one with nulls) against
    the SPEC oracle (SciPy) on that group's valid rows. Blocks of 64 rows, so a group spans many
    blocks and a block many groups; rows with argmax ties, a zero on a true class (clipped),
    and two invalid rows (skipped). With hard labels and no zero weight, the groups' statistics
    are summed from the block's per-row terms by (group, class); a block with a zero weight
    takes the path that scores each group's rows apart (all blocks, or one: then both paths add
    to the same groups)."""
    from xentcli import stream

    monkeypatch.setattr(stream, "MATH_BLOCK_ROWS", 64)
    rng = np.random.default_rng(41)
    n, k = 700, 4
    probs = model_probs(rng, n, k, spread=1.5)
    labels = sample_labels(rng, probs)
    probs[10] = [0.4, 0.4, 0.1, 0.1]
    labels[10] = 1  # a tie at the max: argmax is class 0, a miss
    probs[11] = [0.3, 0.3, 0.3, 0.1]
    labels[11] = 0  # a tie won by the lowest index: a hit
    probs[12] = [0.0, 0.5, 0.5, 0.0]
    labels[12] = 0  # log 0 on the true class: clipped to eps
    probs[300] = [0.5, 0.5, 0.5, 0.5]  # sum 2: invalid, skipped
    probs[301] = [0.1, 0.1, 0.1, 0.1]  # sum 0.4: invalid, skipped
    region = rng.choice(np.array(["eu", "us", "apac"], dtype=object), n)
    region[rng.random(n) < 0.05] = None
    tier = rng.integers(0, 3, n)
    weights = {"none": None, "positive": rng.uniform(0.1, 3.0, n),
               "some_zero": np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.1, 3.0, n)),
               "zero_in_one_block": np.where((np.arange(n) >= 130) & (np.arange(n) < 140), 0.0,
                                             rng.uniform(0.1, 3.0, n))}[weighting]
    columns: dict[str, Any] = {f"p_{c}": probs[:, j] for j, c in enumerate("abcd")}
    columns["label"] = pa.array(["abcd"[i] for i in labels])
    columns["region"] = pa.array(region, type=pa.string())
    columns["tier"] = tier
    if weights is not None:
        columns["w"] = weights
    path = tmp_path / "g.parquet"
    pq.write_table(pa.table(columns), path)
    request = LayoutRequest(by=("region", "tier"), weight="w" if weights is not None else None)
    report = score([str(path)], ScoreOptions(layout=request, eps=eps, chunk_rows=128,
                                             on_invalid="skip"))
    valid = np.ones(n, dtype=bool)
    valid[[300, 301]] = False
    seen = set()
    for group in report.groups:
        in_region = np.array([r == group.by["region"] for r in region])  # None: the null cells
        mask = valid & in_region & (tier.astype(str) == group.by["tier"])
        seen.add((group.by["region"], group.by["tier"]))
        assert group.rows == int(mask.sum())
        w = None if weights is None else weights[mask]
        keep = slice(None) if w is None else w > 0
        expected = oracle(one_hot(labels[mask][keep], k), probs[mask][keep],
                          None if w is None else w[keep], eps=eps)
        assert_metrics_match(group.scores, expected, RTOL)
        assert_per_class_matches(group.scores, expected["per_class"], RTOL)
        true_q = probs[mask][keep][np.arange(len(labels[mask][keep])), labels[mask][keep]]
        assert group.scores.clipped == int((true_q < eps).sum())
    assert seen == {(r, str(t)) for r, t, ok in zip(region, tier, valid, strict=True) if ok}


@given(st.lists(st.integers(0, 50), max_size=200), st.sampled_from([51, 100_000]))
@settings(max_examples=100, deadline=None)
def test_dense_group_keys_are_numpy_unique(values: list[int], space: int) -> None:
    """A block's group keys → the distinct keys and each row's position among them, by counting
    (a small key space) or by sorting (a large one). Oracle: np.unique(return_inverse=True)."""
    from xentcli.stream import _dense_keys

    keys = np.array(values, dtype=np.int64)
    unique, inverse = _dense_keys(keys, space)
    want_unique, want_inverse = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(unique, want_unique)
    np.testing.assert_array_equal(inverse, want_inverse.reshape(-1))


# ---------------------------------------------------------------- the Python API's batches


BAD_BATCHES = [
    pytest.param({"labels": [-1, 0]}, "outside 0..2", id="ignore-index"),
    pytest.param({"labels": [0, 3]}, "outside 0..2", id="label-too-large"),
    pytest.param({"labels": [0.0, 1.0]}, "integer class indices", id="float-labels"),
    pytest.param({"labels": [0, 1], "scale_preds": 1.2}, "sum_off", id="rows-sum-to-1.2"),
    pytest.param({"labels": [0, 1], "nan_row": True}, "not_finite", id="nan"),
    pytest.param({"labels": [0, 1], "weights": [1.0, -1.0]}, "invalid_weight", id="negative-weight"),
]


@pytest.mark.parametrize(("batch", "message"), BAD_BATCHES)
def test_update_refuses_an_invalid_batch_and_adds_nothing(batch: dict[str, Any], message: str) -> None:
    """Accumulator.update checks a batch as the CLI checks rows: a bad one raises DataError and
    leaves the state as it was (here: one good batch, scored as scikit-learn does)."""
    from xentcli.errors import DataError

    good = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    acc = Accumulator(3)
    acc.update(good, labels=np.array([0, 2]))
    preds = good * batch.get("scale_preds", 1.0)
    if batch.get("nan_row"):
        preds = preds.copy()
        preds[1] = np.nan
    weights = batch.get("weights")
    with pytest.raises(DataError, match=message):
        acc.update(preds, labels=np.array(batch["labels"]),
                   weights=None if weights is None else np.array(weights))
    expected = log_loss([0, 2], good, labels=[0, 1, 2])
    assert acc.finalize().cross_entropy == pytest.approx(expected, rel=1e-12)
    assert acc.finalize().rows == 2


@pytest.mark.parametrize("batch", [
    pytest.param({"labels": [0, 2], "targets": [[1, 0, 0], [0, 0, 1]]}, id="labels-and-targets"),
    pytest.param({}, id="neither"),
    pytest.param({"targets": [[1, 0], [0, 1]]}, id="targets-shape"),
    pytest.param({"labels": [0, 2], "weights": [1.0]}, id="weights-shape"),
    pytest.param({"labels": [0, 2], "preds": [[0.5, 0.5], [0.5, 0.5]]}, id="preds-shape"),
])
def test_update_refuses_batches_of_the_wrong_shape(batch: dict[str, Any]) -> None:
    from xentcli.errors import DataError

    acc = Accumulator(3)
    preds = np.array(batch.pop("preds", [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]))
    with pytest.raises(DataError):
        acc.update(preds, **{k: np.array(v) for k, v in batch.items()})
    assert acc.finalize().rows == 0


def test_multilabel_update_refuses_a_batch_of_the_wrong_shape() -> None:
    from xentcli.core.multilabel import MultilabelAccumulator
    from xentcli.errors import DataError

    acc = MultilabelAccumulator(3)
    with pytest.raises(DataError):
        acc.update(np.full((2, 2), 0.5), np.ones((2, 2)))
    assert all(label.stats.rows == 0 for label in acc.per_label)


def test_update_refuses_weights_whose_sum_overflows() -> None:
    """The API's accumulator too: every weight is finite, their sum is not. The batch is refused
    and nothing of it is added (finalize used to fail for every later call). Oracle: sklearn."""
    from xentcli.errors import DataError

    acc = Accumulator(2)
    probs, labels = np.array([[0.9, 0.1], [0.5, 0.5]]), np.array([0, 1])
    acc.update(probs, labels=labels)
    with pytest.raises(DataError, match="weights add up to") as refused:
        acc.update(probs, labels=labels, weights=np.array([1e308, 1e308]))
    assert "this batch was not added" in str(refused.value.hint)
    assert acc.finalize().cross_entropy == pytest.approx(log_loss(labels, probs), rel=1e-12)
