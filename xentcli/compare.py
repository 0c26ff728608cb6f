"""``xent compare BASE NEW``: two models' predictions for the same rows, each metric for both, the
difference, and a paired bootstrap confidence interval of the difference.

Both files are scored by the ordinary pipeline; a row sink keeps each valid row's loss, predictive
entropy, hit, label and row number (29 bytes a row and file with hard labels and no weights; the
KL too with soft targets, the weight with weights, the id text with ``--id``), the rows are paired
by ``--id`` or by position, and the bootstrap resamples them. For large inputs the rows are first
dealt at random into at most ``MAX_BUCKETS`` buckets whose sums are resampled: a bucket of random
rows is an i.i.d. draw, so this is the same bootstrap at a cost independent of the row count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from xentcli import __version__
from xentcli.core.accumulator import Scores, unit_factor
from xentcli.core.kernels import Floats, LogProbs, row_stats
from xentcli.errors import DataError, UsageError, escape_value
from xentcli.pipeline import ScoreOptions, score
from xentcli.report.model import METRIC_KEYS, PER_CLASS_KEYS, SCHEMA_VERSION, GateOutcome, Report
from xentcli.stream import Chunk, Rows

MAX_BUCKETS = 4096
# --bootstrap at most: every replicate's differences are kept for the interval's quantiles
# (1e6 replicates: ~60 MB, and ~3 minutes of resampling on one core)
MAX_REPLICATES = 1_000_000
REPLICATE_BATCH = 1024  # replicates resampled at once: (batch, buckets) counts, 32 MiB
# metrics with a bootstrap interval: all are ratios of per-row sums
CI_METRICS = ("cross_entropy", "kl_divergence", "entropy_pred", "normalized_cross_entropy",
              "perplexity", "accuracy")
_STATS = ("loss", "kl", "pred_entropy", "correct")


@dataclass(frozen=True)
class CompareOptions:
    score: ScoreOptions = field(default_factory=ScoreOptions)
    id_column: str | None = None
    bootstrap: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def check(self) -> None:
        self.score.check()
        if not 0 <= self.bootstrap <= MAX_REPLICATES:
            raise UsageError(f"--bootstrap {self.bootstrap}: expected a number from 0 to {MAX_REPLICATES:,}",
                             "1,000 to 10,000 replicates give a stable 95% interval")
        if self.seed < 0:
            raise UsageError(f"--seed {self.seed}: expected a number >= 0")
        if not 0 < self.confidence < 1:
            raise UsageError(f"--confidence {self.confidence}: expected a number in (0, 1)")
        if self.score.layout.multilabel:
            raise UsageError("xent compare does not take --multilabel yet")


@dataclass
class RowCollector:
    """Per-row values of one file's valid rows, in stream order."""

    eps: float
    id_column: str | None
    parts: dict[str, list[npt.NDArray[Any]]] = field(default_factory=dict)

    def extract(self, chunk: Chunk, local: npt.NDArray[np.intp], ordinals: npt.NDArray[np.intp],
                pred: LogProbs, rows: Rows) -> dict[str, npt.NDArray[Any]]:
        """What the bootstrap and the pairing need of each row, no more: the KL equals the loss
        for hard labels and is then not kept, nor are weights of an unweighted file. Copies:
        views would keep each block's whole arrays alive until the end."""
        stats = row_stats(pred, rows.labels, rows.targets, self.eps)
        values: dict[str, npt.NDArray[Any]] = {
            "loss": stats.loss, "pred_entropy": stats.pred_entropy, "correct": stats.correct,
            "key": self._keys(chunk, local, ordinals),
        }
        if rows.labels is not None:
            values["target"] = rows.labels.astype(np.int32)
        else:
            values["target"] = np.asarray(rows.targets).T.copy()  # (rows, classes)
            values["kl"] = stats.kl
        if rows.weights is not None:
            values["weight"] = rows.weights.copy()
        return values

    def commit(self, part: dict[str, npt.NDArray[Any]]) -> None:
        for name, value in part.items():
            self.parts.setdefault(name, []).append(value)

    def _keys(self, chunk: Chunk, local: npt.NDArray[np.intp], ordinals: npt.NDArray[np.intp],
              ) -> npt.NDArray[Any]:
        """Row ordinals (pairing by position), or the --id values as text."""
        if self.id_column is None:
            return ordinals
        ids = chunk.batch.column(self.id_column).to_pylist()
        return np.array([str(ids[int(i)]) for i in local], dtype=object)

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Each value for all rows, one array per name (each name's parts are let go as soon as
        they are joined, so the peak is the rows' size plus one array, not twice it)."""
        out = {}
        for name in list(self.parts):
            out[name] = np.concatenate(self.parts.pop(name))
        return out


def _pair(base: dict[str, npt.NDArray[Any]], new: dict[str, npt.NDArray[Any]], join: str,
          names: tuple[str, str], classes: Sequence[str], skipped: tuple[int, int],
          ) -> tuple[npt.NDArray[np.intp] | None, npt.NDArray[np.intp] | None]:
    """Indices into base and new that put the same rows side by side (None: the rows are in that
    order already); every row must pair. ``skipped``: each side's invalid rows that were
    skipped, which a row missing on one side may be."""
    base_keys, new_keys = base["key"], new["key"]
    (base_order, base_twice), (new_order, new_twice) = _sort_order(base_keys), _sort_order(new_keys)
    for name, twice in zip(names, (base_twice, new_twice), strict=True):
        if twice is not None:
            raise DataError(f"{join} is not unique in {name}: {escape_value(twice)} is there more than once",
                            "pair rows by a column with one value per row")
    if len(base_keys) != len(new_keys) or not np.array_equal(_taken(base_keys, base_order),
                                                             _taken(new_keys, new_order)):
        missing = np.setdiff1d(base_keys, new_keys)
        extra = np.setdiff1d(new_keys, base_keys)
        where = (f"{names[0]} has {len(missing)} row(s) that {names[1]} lacks"
                 + (f", first {_row_named(join, missing[0])}" if len(missing) else "")
                 + f"; {names[1]} has {len(extra)} that {names[0]} lacks"
                 + (f", first {_row_named(join, extra[0])}" if len(extra) else ""))
        dropped = [f"{n} invalid row(s) of {name} were skipped"
                   for n, name in zip(skipped, names, strict=True) if n]
        raise DataError(f"the rows don't line up ({join}): {where}"
                        + (f" ({'; '.join(dropped)}: a row is paired only when it is valid in both)"
                           if dropped else ""),
                        "compare predictions for the same rows; pass --id COL to pair by a row id")
    base_targets, new_targets = _taken(base["target"], base_order), _taken(new["target"], new_order)
    if not np.array_equal(base_targets, new_targets):
        differ = base_targets != new_targets
        first = int(np.flatnonzero(differ if differ.ndim == 1 else differ.any(axis=1))[0])
        where = _row_named(join, _taken(base_keys, base_order)[first])
        what = (f": {escape_value(classes[base_targets[first]])} in {names[0]}, "
                f"{escape_value(classes[new_targets[first]])} in {names[1]}" if differ.ndim == 1 else "")
        raise DataError(f"the paired rows have different labels or targets ({join}); first at {where}{what}",
                        "both files must hold the same rows; pair them with --id COL")
    if "weight" in base:  # --weight applies to both inputs: both have weights, or neither has
        base_weights, new_weights = _taken(base["weight"], base_order), _taken(new["weight"], new_order)
        if not np.array_equal(base_weights, new_weights):
            first = int(np.flatnonzero(base_weights != new_weights)[0])
            a, b = float(base_weights[first]), float(new_weights[first])
            raise DataError(f"the paired rows have different weights ({join}); first at "
                            f"{_row_named(join, _taken(base_keys, base_order)[first])}: "
                            f"{a!r} in {names[0]}, {b!r} in {names[1]}",
                            "the bootstrap pairs rows of equal weight: give both files the same weights")
    return base_order, new_order


def _row_named(join: str, key: Any) -> str:
    """A paired row as the message names it: by its id, or by its row number."""
    return f"id {escape_value(key)}" if join.startswith("id:") else f"row {key}"


def _sort_order(keys: npt.NDArray[Any]) -> tuple[npt.NDArray[np.intp] | None, Any]:
    """The order that sorts ``keys`` (None: they are increasing already, as row numbers are when
    pairing by position) and a key that is there twice (None: none is). One pass for row
    numbers; a sort for ids (np.unique took ~7 s for 10M row numbers)."""
    if keys.dtype != object and (keys.size < 2 or bool(np.all(keys[1:] > keys[:-1]))):
        return None, None
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    twice = np.flatnonzero(ordered[1:] == ordered[:-1])
    return order, (ordered[twice[0]] if twice.size else None)


def _taken(values: npt.NDArray[Any], order: npt.NDArray[np.intp] | None) -> npt.NDArray[Any]:
    return values if order is None else values[order]


def _in_order(rows: dict[str, npt.NDArray[Any]], order: npt.NDArray[np.intp] | None,
              ) -> dict[str, npt.NDArray[Any]]:
    """The rows in pairing order (as they are, when that is their order already)."""
    return rows if order is None else {k: v[order] for k, v in rows.items()}


def _ratio_metrics(sums: Floats, prior: Floats) -> dict[str, Floats]:
    """Metrics from summed per-row stats; sums[..., j] follows _STATS, then the weight sum."""
    weight = sums[..., -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {name: sums[..., j] / weight for j, name in enumerate(_STATS)}
        out["accuracy"] = out.pop("correct")
        out["cross_entropy"] = out.pop("loss")
        out["kl_divergence"] = out.pop("kl")
        out["entropy_pred"] = out.pop("pred_entropy")
        out["normalized_cross_entropy"] = np.where(prior > 0, out["cross_entropy"] / prior, np.nan)
        out["perplexity"] = np.exp(out["cross_entropy"])
    return out


def _entropy_rows(distribution: Floats, total: Floats) -> Floats:
    """H(p̄) of each replicate: its (replicates, classes) class supports over its weight sum
    (replicates, 1), as :func:`xentcli.core.accumulator.entropy_of`."""
    p = np.where(total > 0, distribution / np.where(total > 0, total, 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)


def bootstrap_diffs(base: dict[str, Floats], new: dict[str, Floats], n_classes: int,
                    replicates: int, seed: int) -> dict[str, Floats]:
    """(new − base) of each CI metric in every paired bootstrap replicate (nats)."""
    rng = np.random.default_rng(seed)
    n_rows = len(base["loss"])
    buckets = min(n_rows, MAX_BUCKETS)
    bucket = np.arange(n_rows) if buckets == n_rows else rng.integers(0, buckets, n_rows)
    weight = base.get("weight")
    weight = np.ones(n_rows) if weight is None else weight
    targets = base["target"]
    bucket_weight = np.bincount(bucket, weight, buckets)

    def bucket_sums(values: dict[str, Floats]) -> Floats:
        per_row = {"kl": values["loss"], **values}  # with hard labels the KL is the loss (not kept)
        columns = [np.bincount(bucket, per_row[s] * weight, buckets) for s in _STATS]
        return np.stack([*columns, bucket_weight], axis=1)

    if targets.ndim == 1:
        support = np.bincount(bucket * n_classes + targets, weight,
                              buckets * n_classes).reshape(buckets, n_classes)
    else:
        support = np.stack([np.bincount(bucket, targets[:, k] * weight, buckets)
                            for k in range(n_classes)], axis=1)
    base_sums, new_sums = bucket_sums(base), bucket_sums(new)
    parts: dict[str, list[Floats]] = {k: [] for k in CI_METRICS}
    # in batches, so that memory does not grow with the replicates; the draws are the same as
    # in one call (the generator fills the rows one after another)
    for start in range(0, replicates, REPLICATE_BATCH):
        size = min(REPLICATE_BATCH, replicates - start)
        counts = rng.multinomial(buckets, np.full(buckets, 1.0 / buckets), size=size).astype(np.float64)
        prior = _entropy_rows(counts @ support, (counts @ bucket_weight)[:, None])
        base_metrics = _ratio_metrics(counts @ base_sums, prior)
        new_metrics = _ratio_metrics(counts @ new_sums, prior)
        for k in CI_METRICS:
            parts[k].append(new_metrics[k] - base_metrics[k])
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


@dataclass(frozen=True)
class MetricComparison:
    base: float | None
    new: float | None
    diff: float | None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class CompareReport:
    base: Report
    new: Report
    join: str
    paired_rows: int
    bootstrap: int
    seed: int
    confidence: float
    metrics: dict[str, MetricComparison]
    per_class: list[dict[str, Any]]
    gates: Sequence[GateOutcome] = ()

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def with_gates(self, gates: Sequence[GateOutcome]) -> CompareReport:
        return replace(self, gates=tuple(gates))

    def gate_view(self) -> dict[str, Any]:
        """What --fail-if sees: the differences, shaped like a score report."""
        return {"metrics": {k: m.diff for k, m in self.metrics.items()},
                "per_class": [{"class": c["class"], **{k: v["diff"] for k, v in c.items() if k != "class"}}
                              for c in self.per_class], "groups": []}

    def to_dict(self, finite: bool = True) -> dict[str, Any]:
        """The JSON object (``finite`` False: infinite numbers kept, as in Report.to_dict)."""
        from xentcli.report.model import finite_or_none

        def number(value: float | None) -> float | None:
            return finite_or_none(value) if finite else value

        def clean(m: MetricComparison) -> dict[str, float | None]:
            return {k: number(getattr(m, k)) for k in ("base", "new", "diff", "ci_low", "ci_high")}

        return {
            "schema_version": SCHEMA_VERSION,
            "xent_version": __version__,
            "kind": "compare",
            "signature": self.base.signature,
            "inputs": {"base": list(self.base.inputs), "new": list(self.new.inputs)},
            "unit": self.base.unit,
            "join": self.join,
            "rows": {"paired": self.paired_rows},
            "bootstrap": {"replicates": self.bootstrap, "seed": self.seed, "confidence": self.confidence},
            "metrics": {k: clean(m) for k, m in self.metrics.items()},
            "per_class": [{"class": c["class"], **{k: {kk: number(vv) for kk, vv in v.items()}
                                                   for k, v in c.items() if k != "class"}}
                          for c in self.per_class],
            "base": self.base.to_dict(finite),
            "new": self.new.to_dict(finite),
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
        }


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return None
    return b - a


def compare(base_paths: Sequence[str], new_paths: Sequence[str], options: CompareOptions) -> CompareReport:
    """Score both inputs, pair their rows and bootstrap the differences."""
    options.check()
    score_options = options.score
    if options.id_column is not None:
        score_options = replace(score_options, layout=replace(score_options.layout, id=options.id_column))
    if [*base_paths, *new_paths].count("-") > 1:
        raise UsageError("standard input (-) is given more than once", "it can be read once")
    base_report, base = _scored(base_paths, score_options)
    classes = base_report.classes
    # NEW's columns in BASE's class order where they name the same classes, so that NEW's ties
    # go to the lowest class index in the order the report shows (accuracy, per class too)
    in_base_order = replace(score_options.layout, class_order=tuple(classes))
    new_report, new = _scored(new_paths, replace(score_options, layout=in_base_order))
    if sorted(new_report.classes) != sorted(classes):
        raise DataError(f"the two inputs have different classes ({', '.join(classes)} against "
                        f"{', '.join(new_report.classes)})", "compare predictions of the same task")
    if new_report.classes != classes:  # the same classes in another order (binary, list)
        new_report, new = _in_class_order(new_report, new, classes)
    join = f"id:{options.id_column}" if options.id_column else "row order"
    base_order, new_order = _pair(base, new, join, (", ".join(base_paths), ", ".join(new_paths)), classes,
                                  (base_report.rows.skipped, new_report.rows.skipped))
    base, new = _in_order(base, base_order), _in_order(new, new_order)
    return _assemble(base_report, new_report, base, new, options, join)


def _scored(paths: Sequence[str], options: ScoreOptions) -> tuple[Report, dict[str, npt.NDArray[Any]]]:
    """One input's report and its valid rows' per-row values."""
    collector = RowCollector(options.eps, options.layout.id)
    report = score(paths, options, row_sink=collector)
    return report, collector.arrays()


def _in_class_order(report: Report, rows: dict[str, npt.NDArray[Any]], classes: Sequence[str],
                    ) -> tuple[Report, dict[str, npt.NDArray[Any]]]:
    """A report and its rows' targets with the same classes put in the order ``classes``: each
    number stays with its class, as scored (nothing is scored again)."""
    order = [list(report.classes).index(c) for c in classes]  # order[k]: where class k was

    def reordered(scores: Scores) -> Scores:
        return replace(scores, per_class=[scores.per_class[i] for i in order])

    groups = [replace(g, scores=reordered(g.scores)) for g in report.groups]
    report = replace(report, classes=list(classes), scores=reordered(report.scores), groups=groups,
                     layout={**report.layout, "classes": list(classes)})
    target = rows["target"]
    rows = {**rows, "target": np.argsort(order)[target] if target.ndim == 1 else target[:, order]}
    return report, rows


def _assemble(base_report: Report, new_report: Report, base: dict[str, Floats], new: dict[str, Floats],
              options: CompareOptions, join: str) -> CompareReport:
    unit = unit_factor(options.score.base)
    diffs = (bootstrap_diffs(base, new, len(base_report.classes), options.bootstrap, options.seed)
             if options.bootstrap > 0 else {})
    alpha = (1 - options.confidence) / 2
    metrics: dict[str, MetricComparison] = {}
    for key in METRIC_KEYS:
        a, b = getattr(base_report.scores, key), getattr(new_report.scores, key)
        low = high = None
        if key in diffs:
            sample = diffs[key][np.isfinite(diffs[key])]
            if sample.size:
                scale = unit if key in ("cross_entropy", "kl_divergence", "entropy_pred") else 1.0
                low, high = (float(np.quantile(sample, q)) / scale for q in (alpha, 1 - alpha))
        metrics[key] = MetricComparison(a, b, _diff(a, b), low, high)
    per_class = [{"class": name, **{k: {"base": getattr(ca, k), "new": getattr(cb, k),
                                        "diff": _diff(getattr(ca, k), getattr(cb, k))}
                                    for k in PER_CLASS_KEYS}}
                 for name, ca, cb in zip(base_report.classes, base_report.scores.per_class,
                                         new_report.scores.per_class, strict=True)]
    return CompareReport(base_report, new_report, join, len(base["loss"]), options.bootstrap,
                         options.seed, options.confidence, metrics, per_class)

