"""Multilabel scoring: every class is an independent Bernoulli, scored as its own binary problem
(classes [absent, present]) by an ordinary two-class :class:`Accumulator`; the aggregate is the
mean over labels (so ``cross_entropy`` is the mean binary cross-entropy over rows and labels, as
PyTorch's ``BCELoss`` with mean reduction)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from xentcli.core import validate
from xentcli.core.accumulator import (
    DEFAULT_EPS,
    Accumulator,
    ClassScores,
    Scale,
    Scores,
    safe_exp,
    unit_factor,
)
from xentcli.core.kernels import Floats, binary_pair


@dataclass
class MultilabelAccumulator:
    """K binary accumulators behind the :class:`Accumulator` interface."""

    n_classes: int
    eps: float = DEFAULT_EPS
    scale: Scale = "probs"
    per_label: list[Accumulator] = field(init=False)

    def __post_init__(self) -> None:
        self.per_label = [Accumulator(2, self.eps, self.scale) for _ in range(self.n_classes)]

    def update_columns(self, preds: Floats, targets: Floats, weights: Floats | None) -> None:
        """preds and 0/1 (or soft) targets, both (labels, rows) in this accumulator's scale."""
        for k, acc in enumerate(self.per_label):
            present = targets[k]
            acc.update_class_major(acc.log_probs(binary_pair(preds[k], self.scale)), None,
                                   np.stack([1.0 - present, present]), weights)

    def update(
        self, preds: npt.ArrayLike, targets: npt.ArrayLike, weights: npt.ArrayLike | None = None
    ) -> None:
        """Add a batch: ``preds`` and ``targets`` are (rows, labels), each checked as the CLI
        checks rows (see :meth:`Accumulator.update`; no row sums here)."""
        weight_arr = None if weights is None else np.asarray(weights, dtype=np.float64)
        pred_cm = np.asarray(preds, dtype=np.float64).T
        target_cm = np.asarray(targets, dtype=np.float64).T
        validate.check_shapes(pred_cm, self.n_classes, target_cm, weight_arr)
        validate.check_batch(pred_cm, self.scale, None, target_cm, weight_arr, check_sums=False)
        self.update_columns(pred_cm, target_cm, weight_arr)

    def merge(self, other: MultilabelAccumulator) -> MultilabelAccumulator:
        merged = MultilabelAccumulator(self.n_classes, self.eps, self.scale)
        merged.per_label = [a.merge(b) for a, b in zip(self.per_label, other.per_label, strict=True)]
        return merged

    @property
    def rows(self) -> int:
        return self.per_label[0].stats.rows

    def finalize(self, base: str = "e") -> Scores:
        """Per label: its binary metrics (support = positives); aggregate: the mean over labels."""
        scores = [acc.finalize(base) for acc in self.per_label]
        total_loss = sum(acc.stats.loss_sum for acc in self.per_label)
        per_class = [_label_scores(s, acc.stats.loss_sum, total_loss)
                     for s, acc in zip(scores, self.per_label, strict=True)]
        ce = _mean([s.cross_entropy for s in scores])
        prior = _mean([s.prior_entropy for s in scores])
        unit = unit_factor(base)
        return replace(
            scores[0],
            cross_entropy=ce,
            entropy_target=_mean([s.entropy_target for s in scores]),
            kl_divergence=_mean([s.kl_divergence for s in scores]),
            entropy_pred=_mean([s.entropy_pred for s in scores]),
            prior_entropy=prior,
            normalized_cross_entropy=None if ce is None or not prior else ce / prior,
            perplexity=None if ce is None else safe_exp(ce * unit),
            accuracy=_mean([s.accuracy for s in scores]),
            clipped=sum(s.clipped for s in scores),
            per_class=per_class,
        )


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(np.mean([v for v in values if v is not None]))


def _label_scores(s: Scores, loss_sum: float, total_loss: float) -> ClassScores:
    present = s.per_class[1]
    return ClassScores(
        support=present.support,
        share=present.share,
        mean_pred=present.mean_pred,
        cross_entropy=s.cross_entropy,
        loss_share=loss_sum / total_loss if total_loss else None,
        kl_divergence=s.kl_divergence,
        entropy_pred=s.entropy_pred,
        accuracy=s.accuracy,
    )
