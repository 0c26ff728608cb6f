"""The report: frozen dataclasses whose ``to_dict()`` is the JSON contract of SPEC section 4."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from xentcli.core.accumulator import ClassScores, GroupKey, Scores

SCHEMA_VERSION = 1
METRIC_KEYS = ("cross_entropy", "entropy_target", "kl_divergence", "entropy_pred", "prior_entropy",
               "normalized_cross_entropy", "perplexity", "accuracy", "weight_sum")
PER_CLASS_KEYS = ("support", "share", "mean_pred", "cross_entropy", "loss_share", "kl_divergence",
                  "entropy_pred", "accuracy")


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or Infinity: a non-finite number is reported as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def metrics_dict(scores: Scores) -> dict[str, float | None]:
    return {key: getattr(scores, key) for key in METRIC_KEYS}


def per_class_list(classes: Sequence[str], scores: Scores) -> list[dict[str, Any]]:
    return [{"class": name, **_class_dict(cs)} for name, cs in zip(classes, scores.per_class, strict=False)]


def _class_dict(cs: ClassScores) -> dict[str, float | None]:
    return {key: getattr(cs, key) for key in PER_CLASS_KEYS}


@dataclass(frozen=True)
class RowCounts:
    read: int
    scored: int
    skipped: int
    skipped_by_reason: Mapping[str, int]
    clipped: int


def group_label(value: str | None) -> str:
    """A group value in tables, CSV scopes and gate names: a null cell shows as null (in JSON
    it is null, apart from a text cell that reads "null")."""
    return "null" if value is None else value


def group_order(key: GroupKey) -> tuple[tuple[int, float, str], ...]:
    """The order groups are reported in: by each value, numbers by their value (9 before 10),
    then text, then null."""
    def one(value: str | None) -> tuple[int, float, str]:
        if value is None:
            return (2, 0.0, "")
        try:
            number = float(value)
        except ValueError:
            return (1, 0.0, value)
        return (0, number, value) if math.isfinite(number) else (1, 0.0, value)

    return tuple(one(value) for value in key)


@dataclass(frozen=True)
class GroupReport:
    by: Mapping[str, str | None]
    rows: int
    scores: Scores

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        return {"by": dict(self.by), "rows": self.rows, "metrics": metrics_dict(self.scores),
                "per_class": per_class_list(classes, self.scores)}


@dataclass(frozen=True)
class WorstRow:
    file: str
    row: int
    id: str | None
    label: str
    p_true: float
    cross_entropy: float


@dataclass(frozen=True)
class GateOutcome:
    expr: str
    value: float | None
    threshold: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Report:
    """Everything ``xent score`` reports. Numbers are in ``unit`` except perplexity."""

    xent_version: str
    signature: str
    inputs: Sequence[str]
    unit: str
    layout: Mapping[str, Any]
    rows: RowCounts
    classes: Sequence[str]
    scores: Scores
    groups: Sequence[GroupReport] = ()
    worst: Sequence[WorstRow] = ()
    gates: Sequence[GateOutcome] = ()
    schema_version: int = SCHEMA_VERSION
    warnings: Sequence[str] = field(default=(), compare=False)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def with_gates(self, gates: Sequence[GateOutcome]) -> Report:
        return replace(self, gates=tuple(gates))

    def to_dict(self, finite: bool = True) -> dict[str, Any]:
        """The JSON object of SPEC section 4: non-finite numbers become None (with ``finite``
        False they are kept, for a format that can tell an infinite loss from an undefined
        value)."""
        raw = {
            "schema_version": self.schema_version,
            "xent_version": self.xent_version,
            "signature": self.signature,
            "inputs": list(self.inputs),
            "unit": self.unit,
            "layout": dict(self.layout),
            "rows": {**asdict(self.rows), "skipped_by_reason": dict(self.rows.skipped_by_reason)},
            "metrics": metrics_dict(self.scores),
            "per_class": per_class_list(self.classes, self.scores),
            "groups": [g.to_dict(self.classes) for g in self.groups],
            "worst": [asdict(w) for w in self.worst],
            "gates": [asdict(g) for g in self.gates],
            "passed": self.passed,
        }
        return _clean(raw, finite)


def _clean(value: Any, finite: bool = True) -> Any:
    """A fresh copy (never the report's own lists), with non-finite numbers as None when
    ``finite``."""
    if isinstance(value, float):
        return finite_or_none(value) if finite else value
    if isinstance(value, dict):
        return {k: _clean(v, finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, finite) for v in value]
    return value
