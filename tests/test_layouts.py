"""Column layouts and the math flags of SPEC sections 1 and 2, each against an independent oracle.

Every number is checked against scikit-learn (``log_loss`` with ``labels=`` and
``sample_weight=``), SciPy (``log_softmax``, ``rel_entr``, ``xlogy``, ``entropy``) or plain NumPy
written here. Tolerances: rtol 1e-9 against an oracle (same formula, another summation order),
1e-12 between two xent runs that must agree (SPEC 1: chunking, order and repetition change
nothing beyond 1e-12). Data are seeded: predictions are the softmax of random logits.

Most cases call the Python API ``xentcli.score`` (the CLI's report, SPEC 7); exit codes, strict
JSON and the table go through ``xentcli.cli.main``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from helpers import load_json, run_cli, write_parquet
from scipy.special import log_softmax, rel_entr, softmax, xlogy
from scipy.stats import entropy
from sklearn.metrics import log_loss

from xentcli import ScoreOptions, score
from xentcli.io.layout import LayoutRequest

RTOL = 1e-9  # against an oracle
SAME = 1e-12  # two xent runs that must agree
CLASSES = ("cat", "dog", "bird")
N_ROWS = 120
UNIT_METRICS = ("cross_entropy", "entropy_target", "kl_divergence", "entropy_pred", "prior_entropy")
UNITLESS_METRICS = ("normalized_cross_entropy", "perplexity", "accuracy", "weight_sum")
UNIT_CLASS_KEYS = ("cross_entropy", "kl_divergence", "entropy_pred")
UNITLESS_CLASS_KEYS = ("support", "share", "mean_pred", "loss_share", "accuracy")


# --------------------------------------------------------------------------------------------
# Helpers


def run(paths: Path | Sequence[Path], **kwargs: Any) -> dict[str, Any]:
    """``xentcli.score`` → the JSON dict; layout flags and options in one keyword list."""
    layout_keys = set(LayoutRequest.__dataclass_fields__)
    layout = LayoutRequest(**{k: v for k, v in kwargs.items() if k in layout_keys})
    options = ScoreOptions(layout=layout, **{k: v for k, v in kwargs.items() if k not in layout_keys})
    path_list = [paths] if isinstance(paths, Path) else list(paths)
    report = score([str(p) for p in path_list], options).to_dict()
    json.dumps(report, allow_nan=False)  # what the CLI prints must be strict JSON
    return report


def write_csv(path: Path, columns: dict[str, Sequence[Any]]) -> Path:
    """Floats with repr() so that they round-trip exactly; None is an empty cell."""
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, (float, np.floating)):
            return repr(float(value))
        return str(value)

    names = list(columns)
    lines = [",".join(names)]
    for i in range(len(columns[names[0]])):
        lines.append(",".join(cell(columns[name][i]) for name in names))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def random_logits(rng: np.random.Generator, n_rows: int, n_classes: int, scale: float = 2.0) -> np.ndarray:
    return rng.normal(scale=scale, size=(n_rows, n_classes))


def make_labels(rng: np.random.Generator, n_rows: int, n_classes: int) -> np.ndarray:
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[:n_classes] = np.arange(n_classes)
    return labels


def wide(prefix: str, matrix: np.ndarray, classes: Sequence[str] = CLASSES) -> dict[str, np.ndarray]:
    return {f"{prefix}{c}": matrix[:, k] for k, c in enumerate(classes)}


def hard_columns(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    return {"label": [CLASSES[k] for k in labels], **wide("p_", probs)}


def sk_ce(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None) -> float:
    return float(log_loss(labels, probs, labels=list(range(probs.shape[1])), sample_weight=weights))


def assert_reports_agree(a: dict[str, Any], b: dict[str, Any], rel: float = SAME) -> None:
    """metrics and per_class of two reports, key by key."""
    assert a["layout"]["classes"] == b["layout"]["classes"]
    for key, value in a["metrics"].items():
        assert b["metrics"][key] == pytest.approx(value, rel=rel, abs=1e-15), key
    for mine, theirs in zip(a["per_class"], b["per_class"], strict=True):
        for key, value in mine.items():
            if value is None or isinstance(value, str):
                assert theirs[key] == value, key
            else:
                assert theirs[key] == pytest.approx(value, rel=rel, abs=1e-15), (mine["class"], key)


@dataclass(frozen=True)
class Hard:
    labels: np.ndarray
    probs: np.ndarray


def hard_data(seed: int, n_rows: int = N_ROWS, scale: float = 2.0) -> Hard:
    rng = np.random.default_rng(seed)
    return Hard(make_labels(rng, n_rows, 3), softmax(random_logits(rng, n_rows, 3, scale), axis=1))


# --------------------------------------------------------------------------------------------
# --scale logits | logprobs


def test_multiclass_logits_vs_log_softmax(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    logits = random_logits(rng, N_ROWS, 3, scale=4.0)
    logits[:3] = [[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0], [3e3, 3e3, -5e3]]  # huge, but exact
    labels = make_labels(rng, N_ROWS, 3)
    labels[:3] = [1, 0, 2]  # losses of 1e4, 2e4 and 8e3 + log 2
    path = write_parquet(tmp_path / "logits.parquet",
                         {"label": [CLASSES[k] for k in labels], **wide("l_", logits)})
    report = run(path, scale="logits")
    log_q = log_softmax(logits, axis=1)
    losses = -log_q[np.arange(N_ROWS), labels]
    assert np.isfinite(losses).all()
    metrics = report["metrics"]
    assert metrics["cross_entropy"] == pytest.approx(losses.mean(), rel=RTOL)
    assert metrics["kl_divergence"] == pytest.approx(losses.mean(), rel=RTOL)
    q = np.exp(log_q)
    assert metrics["entropy_pred"] == pytest.approx(entropy(q, axis=1).mean(), rel=RTOL)
    assert report["rows"]["clipped"] == 0  # logs come from the input: nothing clipped
    for k, entry in enumerate(report["per_class"]):
        assert entry["cross_entropy"] == pytest.approx(losses[labels == k].mean(), rel=RTOL)
    # the same logits shifted by a constant per row are the same predictions
    shifted = write_parquet(tmp_path / "shifted.parquet",
                            {"label": [CLASSES[k] for k in labels], **wide("l_", logits + 50.0)})
    assert run(shifted, scale="logits")["metrics"]["cross_entropy"] == pytest.approx(
        losses.mean(), rel=RTOL)


def test_multiclass_logits_match_sklearn_on_softmax(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    logits = random_logits(rng, N_ROWS, 3)
    labels = make_labels(rng, N_ROWS, 3)
    path = write_csv(tmp_path / "logits.csv", {"label": [CLASSES[k] for k in labels], **wide("z_", logits)})
    report = run(path, scale="logits")
    assert report["metrics"]["cross_entropy"] == pytest.approx(
        sk_ce(labels, softmax(logits, axis=1)), rel=RTOL)
    assert report["layout"]["scale"] == "logits"
    assert "scale:logits" in report["signature"]


def _log_sigmoid_losses(logit: np.ndarray, y: np.ndarray) -> np.ndarray:
    """−log σ(x) for y = 1 and −log(1 − σ(x)) = −log σ(−x) for y = 0, as log(1 + e^∓x)."""
    return np.where(y == 1, np.logaddexp(0.0, -logit), np.logaddexp(0.0, logit))


def test_binary_logit_column_vs_log_sigmoid(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    logit = rng.normal(scale=3.0, size=N_ROWS)
    y = rng.integers(0, 2, size=N_ROWS)
    path = write_parquet(tmp_path / "binary_logits.parquet", {"label": y, "logit": logit})
    report = run(path, scale="logits")
    assert report["layout"]["classes"] == ["0", "1"]
    losses = _log_sigmoid_losses(logit, y)
    assert report["metrics"]["cross_entropy"] == pytest.approx(losses.mean(), rel=RTOL)
    p = 1.0 / (1.0 + np.exp(-logit))
    assert report["metrics"]["cross_entropy"] == pytest.approx(
        float(log_loss(y, p, labels=[0, 1])), rel=RTOL)


def test_binary_logits_of_1e4_give_a_finite_exact_loss(tmp_path: Path) -> None:
    logit = np.array([1e4, -1e4, 1e4, -1e4, 0.0])
    y = np.array([0, 1, 1, 0, 1])
    path = write_parquet(tmp_path / "extreme.parquet", {"label": y, "logit": logit})
    report = run(path, scale="logits")
    losses = _log_sigmoid_losses(logit, y)  # 1e4, 1e4, 0, 0, log 2
    assert losses.tolist() == [1e4, 1e4, 0.0, 0.0, math.log(2.0)]
    ce = report["metrics"]["cross_entropy"]
    assert ce is not None and math.isfinite(ce)
    assert ce == pytest.approx((2e4 + math.log(2.0)) / 5, rel=1e-15)
    assert report["per_class"][0]["cross_entropy"] == pytest.approx(1e4 / 2, rel=1e-15)
    assert report["per_class"][1]["cross_entropy"] == pytest.approx((1e4 + math.log(2.0)) / 3, rel=1e-15)


def test_confident_logits_keep_their_tiny_losses(tmp_path: Path) -> None:
    """A row whose true logit leads by 40 has a loss of log(1 + 2e^-40) ≈ 8.5e-18, not 0: the
    per-class loss shares are those of these tiny losses (oracle: log1p of the closed form)."""
    logits = np.array([[40.0, 0.0, 0.0], [0.0, 42.0, 0.0], [0.0, 0.0, 45.0]])
    path = write_csv(tmp_path / "sure.csv", {"label": list(CLASSES), **wide("z_", logits)})
    report = run(path, scale="logits")
    losses = np.log1p(2.0 * np.exp(-np.array([40.0, 42.0, 45.0])))
    assert report["metrics"]["cross_entropy"] == pytest.approx(losses.mean(), rel=1e-13)
    for k, entry in enumerate(report["per_class"]):
        assert entry["cross_entropy"] == pytest.approx(losses[k], rel=1e-13)
        assert entry["loss_share"] == pytest.approx(losses[k] / losses.sum(), rel=1e-13)
    binary = write_csv(tmp_path / "sure_binary.csv", {"label": ["false", "true"], "logit": [-35.0, 30.0]})
    per_row = np.log1p(np.exp(-np.array([35.0, 30.0])))  # −log(1 − σ(−35)), −log σ(30)
    report = run(binary, scale="logits")
    assert report["metrics"]["cross_entropy"] == pytest.approx(per_row.mean(), rel=1e-13)
    assert report["per_class"][0]["loss_share"] == pytest.approx(per_row[0] / per_row.sum(), rel=1e-13)


def test_logprobs_used_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    log_q = log_softmax(random_logits(rng, N_ROWS, 3, scale=6.0), axis=1)
    log_q[0] = [-800.0, 0.0, -900.0]  # exp underflows to 0; the log is still exact
    labels = make_labels(rng, N_ROWS, 3)
    path = write_parquet(tmp_path / "logprobs.parquet",
                         {"label": [CLASSES[k] for k in labels], **wide("lp_", log_q)})
    report = run(path, scale="logprobs")
    losses = -log_q[np.arange(N_ROWS), labels]
    assert report["metrics"]["cross_entropy"] == pytest.approx(losses.mean(), rel=RTOL)
    assert report["rows"]["clipped"] == 0
    for k, entry in enumerate(report["per_class"]):
        assert entry["cross_entropy"] == pytest.approx(losses[labels == k].mean(), rel=RTOL)


# --------------------------------------------------------------------------------------------
# Soft targets


def test_soft_targets_vs_scipy(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(3), size=N_ROWS)
    p[:5] = [[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0], [0, 0.25, 0.75], [0, 0, 1]]  # 0·log 0 = 0
    q = softmax(random_logits(rng, N_ROWS, 3), axis=1)
    columns = {"label": ["ignored"] * N_ROWS, **wide("t_", p), **wide("q_", q)}
    path = write_parquet(tmp_path / "soft.parquet", columns)
    report = run(path, target="t_*", pred="q_*")
    assert report["layout"]["target"] == "soft"
    assert report["layout"]["classes"] == list(CLASSES)
    assert report["layout"]["target_columns"] == [f"t_{c}" for c in CLASSES]
    m = report["metrics"]
    ce_rows = -xlogy(p, q).sum(axis=1)
    h_rows = entropy(p, axis=1)
    kl_rows = rel_entr(p, q).sum(axis=1)
    assert m["cross_entropy"] == pytest.approx(ce_rows.mean(), rel=RTOL)
    assert m["entropy_target"] == pytest.approx(h_rows.mean(), rel=RTOL)
    assert m["kl_divergence"] == pytest.approx(kl_rows.mean(), rel=RTOL)
    assert m["cross_entropy"] == pytest.approx(m["entropy_target"] + m["kl_divergence"], rel=1e-12)
    assert m["entropy_pred"] == pytest.approx(entropy(q, axis=1).mean(), rel=RTOL)
    assert m["prior_entropy"] == pytest.approx(float(entropy(p.mean(axis=0))), rel=RTOL)
    for k, entry in enumerate(report["per_class"]):
        support = p[:, k].sum()
        assert entry["support"] == pytest.approx(support, rel=RTOL)
        assert entry["cross_entropy"] == pytest.approx(-xlogy(p[:, k], q[:, k]).sum() / support, rel=RTOL)
        assert entry["kl_divergence"] == pytest.approx(rel_entr(p[:, k], q[:, k]).sum() / support, rel=RTOL)


def test_soft_target_mass_far_below_q(tmp_path: Path) -> None:
    """A class whose target mass is tiny next to q: its per-class KL is Σ p·log(p/q) / support,
    about log(p/q) here, to 1e-12 (the p ≈ q form of the terms left an ulp of q, all of it
    after dividing by a support of 1e-18)."""
    p = np.array([[1.0 - 1e-12, 1e-12, 0.0], [1.0, 1e-18, 0.0], [0.5, 1e-300, 0.5]])
    q = np.array([[0.7, 0.3, 0.0], [0.6, 0.3, 0.1], [0.3, 0.3, 0.4]])
    path = write_csv(tmp_path / "tiny.csv", {**wide("t_", p), **wide("q_", q)})
    report = run(path, target="t_*", pred="q_*")
    for k, entry in enumerate(report["per_class"]):
        kl = rel_entr(p[:, k], q[:, k]).sum() / p[:, k].sum()
        assert entry["kl_divergence"] == pytest.approx(kl, rel=1e-12), entry["class"]
    assert report["metrics"]["kl_divergence"] == pytest.approx(rel_entr(p, q).sum(axis=1).mean(), rel=1e-12)


def test_prior_entropy_when_a_class_share_underflows(tmp_path: Path) -> None:
    """p̄ of class c is 5e-324 / 2, which is 0 in float64: H(p̄) is that of the other two
    classes (scipy), not 0 and not NaN."""
    p = np.array([[0.5, 0.5, 5e-324], [0.2, 0.8, 0.0]])
    q = np.array([[0.3, 0.3, 0.4], [0.3, 0.3, 0.4]])
    path = write_csv(tmp_path / "sub.csv", {**wide("t_", p), **wide("q_", q)})
    report = run(path, target="t_*", pred="q_*")
    assert report["metrics"]["prior_entropy"] == pytest.approx(float(entropy(p.mean(axis=0))), rel=1e-12)


def test_soft_targets_one_hot_equal_hard_labels(tmp_path: Path) -> None:
    data = hard_data(6)
    one_hot = np.eye(3)[data.labels]
    soft = write_parquet(tmp_path / "soft.parquet", {**wide("t_", one_hot), **wide("q_", data.probs)})
    hard = write_parquet(tmp_path / "hard.parquet", {"label": [CLASSES[k] for k in data.labels],
                                                     **wide("q_", data.probs)})
    a, b = run(soft, target="t_*", pred="q_*"), run(hard)
    assert a["metrics"]["cross_entropy"] == pytest.approx(sk_ce(data.labels, data.probs), rel=RTOL)
    assert a["metrics"]["entropy_target"] == 0.0
    assert_reports_agree(b, a, rel=1e-12)


def test_soft_target_columns_pair_with_predictions_by_class(tmp_path: Path) -> None:
    """A glob lists columns in file order: targets written in another order than the predictions
    (t_bird, t_cat, t_dog beside q_cat, q_dog, q_bird) are still paired class with class."""
    rng = np.random.default_rng(23)
    p = rng.dirichlet(np.ones(3), size=N_ROWS)
    q = softmax(random_logits(rng, N_ROWS, 3), axis=1)
    shuffled = ("bird", "cat", "dog")
    columns = {**{f"t_{c}": p[:, CLASSES.index(c)] for c in shuffled}, **wide("q_", q)}
    path = write_parquet(tmp_path / "soft.parquet", columns)
    report = run(path, target="t_*", pred="q_*")
    assert report["layout"]["target_columns"] == [f"t_{c}" for c in CLASSES]
    assert report["metrics"]["cross_entropy"] == pytest.approx(-xlogy(p, q).sum(axis=1).mean(), rel=RTOL)
    assert report["metrics"]["kl_divergence"] == pytest.approx(rel_entr(p, q).sum(axis=1).mean(), rel=RTOL)
    for k, entry in enumerate(report["per_class"]):
        assert entry["class"] == CLASSES[k]
        assert entry["support"] == pytest.approx(p[:, k].sum(), rel=RTOL)
    # --classes reorders both lists together, still class with class
    ordered = run(path, target="t_*", pred="q_*", classes=list(shuffled))
    assert [e["class"] for e in ordered["per_class"]] == list(shuffled)
    assert ordered["metrics"]["cross_entropy"] == pytest.approx(report["metrics"]["cross_entropy"], rel=SAME)
    for entry in ordered["per_class"]:
        assert entry["support"] == pytest.approx(p[:, CLASSES.index(entry["class"])].sum(), rel=RTOL)


def test_targets_that_name_other_classes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Target and prediction columns whose class parts differ cannot be paired by a glob (an
    error, exit 3); named one by one, they pair in the order given."""
    rng = np.random.default_rng(29)
    p = rng.dirichlet(np.ones(3), size=N_ROWS)
    q = softmax(random_logits(rng, N_ROWS, 3), axis=1)
    path = write_parquet(tmp_path / "soft.parquet", {**wide("t_", p, ("x", "y", "z")), **wide("q_", q)})
    result = run_cli(capsys, "score", path, "--target", "t_*", "--pred", "q_*")
    assert result.code == 3 and result.out == ""
    assert "name different classes" in result.err and "--target t_x,t_y,t_z" in result.err
    report = run(path, target="t_x,t_y,t_z", pred="q_cat,q_dog,q_bird")
    assert report["metrics"]["cross_entropy"] == pytest.approx(-xlogy(p, q).sum(axis=1).mean(), rel=RTOL)


# --------------------------------------------------------------------------------------------
# Weights


def test_weights_vs_sklearn_sample_weight(tmp_path: Path) -> None:
    data = hard_data(7)
    rng = np.random.default_rng(70)
    w = rng.uniform(0.1, 3.0, size=N_ROWS)
    path = write_parquet(tmp_path / "weighted.parquet", {**hard_columns(data.labels, data.probs), "w": w})
    report = run(path, weight="w")
    assert report["layout"]["weight_column"] == "w"
    assert "weights:yes" in report["signature"]
    m = report["metrics"]
    assert m["cross_entropy"] == pytest.approx(sk_ce(data.labels, data.probs, w), rel=RTOL)
    assert m["weight_sum"] == pytest.approx(w.sum(), rel=RTOL)
    losses = -np.log(data.probs[np.arange(N_ROWS), data.labels])
    for k, entry in enumerate(report["per_class"]):
        rows = data.labels == k
        assert entry["support"] == pytest.approx(w[rows].sum(), rel=RTOL)
        assert entry["cross_entropy"] == pytest.approx((w[rows] * losses[rows]).sum() / w[rows].sum(),
                                                       rel=RTOL)
        assert entry["mean_pred"] == pytest.approx((w * data.probs[:, k]).sum() / w.sum(), rel=RTOL)


def test_zero_weight_rows_are_dropped_rows(tmp_path: Path) -> None:
    data = hard_data(8)
    rng = np.random.default_rng(80)
    w = rng.uniform(0.5, 2.0, size=N_ROWS)
    zero = rng.random(N_ROWS) < 0.3
    zero[:3] = False  # every class keeps a row
    w[zero] = 0.0
    probs = data.probs.copy()
    first = np.flatnonzero(zero)[0]  # a zero-weight row with q = 0 on its label (eps 0 below):
    probs[first, data.labels[first]] = 0.0  # an infinite loss that weight 0 must drop too
    probs[first] /= probs[first].sum()
    weighted = write_parquet(tmp_path / "w.parquet", {**hard_columns(data.labels, probs), "w": w})
    keep = ~zero
    dropped = write_parquet(tmp_path / "d.parquet",
                            {**hard_columns(data.labels[keep], probs[keep]), "w": w[keep]})
    a, b = run(weighted, weight="w", eps=0.0), run(dropped, weight="w", eps=0.0)
    assert_reports_agree(b, a)
    assert a["metrics"]["cross_entropy"] == pytest.approx(
        sk_ce(data.labels[keep], probs[keep], w[keep]), rel=RTOL)


def test_integer_weights_are_repeated_rows(tmp_path: Path) -> None:
    data = hard_data(9)
    rng = np.random.default_rng(90)
    w = rng.integers(1, 5, size=N_ROWS)
    weighted = write_parquet(tmp_path / "w.parquet",
                             {**hard_columns(data.labels, data.probs), "w": w.astype(np.int64)})
    index = np.repeat(np.arange(N_ROWS), w)
    repeated = write_parquet(tmp_path / "r.parquet", hard_columns(data.labels[index], data.probs[index]))
    a, b = run(weighted, weight="w"), run(repeated)
    assert_reports_agree(b, a, rel=1e-12)
    assert a["metrics"]["weight_sum"] == float(w.sum())


@pytest.mark.parametrize("bad", [None, -1.0])
def test_null_or_negative_weight_is_a_located_data_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: float | None
) -> None:
    data = hard_data(10, n_rows=20)
    w: list[float | None] = [1.0] * 20
    w[6] = bad  # data row 7, line 8
    path = write_csv(tmp_path / "weights.csv", {**hard_columns(data.labels, data.probs), "w": w})
    result = run_cli(capsys, "score", path, "--weight", "w", "-f", "json")
    assert result.code == 3, result.err
    assert result.out == ""
    assert "row 7" in result.err
    assert "'w'" in result.err
    assert "weights.csv" in result.err
    assert "Traceback" not in result.err


# --------------------------------------------------------------------------------------------
# Binary


def test_binary_01_labels_one_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, size=N_ROWS)
    p = 1.0 / (1.0 + np.exp(-rng.normal(scale=2.0, size=N_ROWS)))
    for path in (write_csv(tmp_path / "churn.csv", {"label": y, "p_churn": p}),
                 write_parquet(tmp_path / "churn.parquet", {"label": y, "p_churn": p})):
        report = run(path)
        assert report["layout"]["classes"] == ["0", "1"]
        assert [e["class"] for e in report["per_class"]] == ["0", "1"]
        assert report["metrics"]["cross_entropy"] == pytest.approx(
            float(log_loss(y, p, labels=[0, 1])), rel=RTOL)
        assert report["per_class"][1]["support"] == float(y.sum())
        assert report["per_class"][1]["mean_pred"] == pytest.approx(p.mean(), rel=RTOL)


@pytest.mark.parametrize("kind", ["parquet-bool", "csv-text", "csv-pandas"])
def test_binary_true_false_labels(tmp_path: Path, kind: str) -> None:
    """true/false labels: a Parquet bool column, or text; pandas writes True/False to a CSV."""
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, size=N_ROWS).astype(bool)
    p = rng.uniform(0.02, 0.98, size=N_ROWS)
    if kind == "parquet-bool":
        path = write_parquet(tmp_path / "b.parquet", {"label": pa.array(y, pa.bool_()), "p_yes": p})
    elif kind == "csv-text":
        path = write_csv(tmp_path / "b.csv", {"label": ["true" if v else "false" for v in y], "p_yes": p})
    else:
        path = write_csv(tmp_path / "b.csv", {"label": [str(bool(v)) for v in y], "p_yes": p})
    report = run(path)
    assert report["layout"]["classes"] == ["false", "true"]
    assert report["metrics"]["cross_entropy"] == pytest.approx(
        float(log_loss(y.astype(int), p, labels=[0, 1])), rel=RTOL)
    assert report["per_class"][1]["support"] == float(y.sum())


@pytest.mark.parametrize("positive", ["yes", "no"])
def test_binary_positive_value(tmp_path: Path, positive: str) -> None:
    rng = np.random.default_rng(13)
    values = np.array(["yes", "no"])[rng.integers(0, 2, size=N_ROWS)]
    p = rng.uniform(0.02, 0.98, size=N_ROWS)  # P(label == positive)
    path = write_csv(tmp_path / "yn.csv", {"answer": values, "p_positive": p})
    report = run(path, label="answer", positive=positive)
    negative = "no" if positive == "yes" else "yes"
    assert report["layout"]["classes"] == [negative, positive]
    # sklearn: a 1-d y_pred is P(the greater of the sorted labels); map VALUE to 1 explicitly
    y = (values == positive).astype(int)
    assert report["metrics"]["cross_entropy"] == pytest.approx(float(log_loss(y, p, labels=[0, 1])),
                                                               rel=RTOL)
    assert report["per_class"][1]["support"] == float(y.sum())
    assert report["per_class"][0]["support"] == float((1 - y).sum())


def test_binary_positive_with_a_third_label_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = ["yes", "no", "yes", "no", "maybe", "yes"]
    path = write_csv(tmp_path / "yn.csv", {"answer": values, "p_yes": [0.9, 0.2, 0.7, 0.4, 0.5, 0.8]})
    result = run_cli(capsys, "score", path, "--label", "answer", "--positive", "yes", "-f", "json")
    assert result.code == 3, result.err
    assert "maybe" in result.err
    assert "row 5" in result.err


def test_prior_entropy_of_a_single_class_is_zero_not_minus_zero(tmp_path: Path) -> None:
    """scipy's entropy of [1] is 0.0; JSON must not say -0.0 (nor the table -0.0000)."""
    path = write_csv(tmp_path / "one.csv", {"label": ["cat", "cat"], "p_cat": [0.9, 0.6],
                                            "p_dog": [0.1, 0.4]})
    prior = run(path)["metrics"]["prior_entropy"]
    assert prior == float(entropy([1.0])) == 0.0
    assert math.copysign(1.0, prior) == 1.0


def test_pandas_index_is_not_a_prediction(tmp_path: Path) -> None:
    """A filtered DataFrame written with to_parquet keeps its index as __index_level_0__ (and a
    named index under its name): neither is a probability column."""
    import pandas as pd

    data = hard_data(17)
    frame = pd.DataFrame({"label": [CLASSES[k] for k in data.labels],
                          **{c: data.probs[:, k] for k, c in enumerate(CLASSES)}})
    kept = frame[frame["cat"] > 0.05]
    rows = kept.index.to_numpy()
    kept.to_parquet(tmp_path / "filtered.parquet")
    kept.rename_axis("row").to_parquet(tmp_path / "named.parquet")
    for name in ("filtered.parquet", "named.parquet"):
        report = run(tmp_path / name)
        assert report["layout"]["pred_columns"] == list(CLASSES)
        assert report["metrics"]["cross_entropy"] == pytest.approx(
            sk_ce(data.labels[rows], data.probs[rows]), rel=RTOL)


# --------------------------------------------------------------------------------------------
# Classes


def test_classes_fix_the_order_of_wide_columns(tmp_path: Path) -> None:
    """--classes reorders; it must not rename p_cat to whatever comes first in the list."""
    data = hard_data(14)
    path = write_parquet(tmp_path / "wide.parquet", hard_columns(data.labels, data.probs))
    order = ["bird", "cat", "dog"]
    report = run(path, classes=order)
    assert report["layout"]["classes"] == order
    assert [e["class"] for e in report["per_class"]] == order
    assert report["metrics"]["cross_entropy"] == pytest.approx(sk_ce(data.labels, data.probs), rel=RTOL)
    for entry in report["per_class"]:
        k = CLASSES.index(entry["class"])
        rows = data.labels == k
        assert entry["support"] == float(rows.sum())
        assert entry["mean_pred"] == pytest.approx(data.probs[:, k].mean(), rel=RTOL)
        assert entry["cross_entropy"] == pytest.approx(-np.log(data.probs[rows, k]).mean(), rel=RTOL)


def test_classes_may_keep_more_of_the_column_names(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    """p_new_york, p_new_jersey share the prefix p_new_, so the classes are york and jersey by
    default; labels written new_york are then unknown, the hint gives the --classes that names
    the columns as the labels do, and with it the file scores as scikit-learn does."""
    data = hard_data(16, scale=1.0)
    cities = ("new_york", "new_jersey", "new_hampshire")
    path = write_csv(tmp_path / "ny.csv", {"label": [cities[k] for k in data.labels],
                                           **wide("p_", data.probs, cities)})
    result = run_cli(capsys, "score", path)
    assert result.code == 3 and "pass --classes new_york,new_jersey,new_hampshire" in result.err
    report = run(path, classes=["new_hampshire", "new_york", "new_jersey"])
    assert report["layout"]["classes"] == ["new_hampshire", "new_york", "new_jersey"]
    assert report["metrics"]["cross_entropy"] == pytest.approx(sk_ce(data.labels, data.probs), rel=RTOL)
    by_class = {e["class"]: e for e in report["per_class"]}
    for k, city in enumerate(cities):
        assert by_class[city]["support"] == float((data.labels == k).sum())
        assert by_class[city]["mean_pred"] == pytest.approx(data.probs[:, k].mean(), rel=RTOL)


def test_classes_name_a_list_column(tmp_path: Path) -> None:
    data = hard_data(15)
    path = write_parquet(tmp_path / "list.parquet", {
        "label": [CLASSES[k] for k in data.labels],
        "probs": pa.array(data.probs.tolist(), pa.list_(pa.float64())),
    })
    report = run(path, classes=list(CLASSES))
    assert report["layout"]["classes"] == list(CLASSES)
    assert report["metrics"]["cross_entropy"] == pytest.approx(sk_ce(data.labels, data.probs), rel=RTOL)
    for k, entry in enumerate(report["per_class"]):
        assert entry["support"] == float((data.labels == k).sum())


@pytest.mark.parametrize("layout", ["wide", "list"])
def test_a_class_missing_from_the_labels_is_still_reported(tmp_path: Path, layout: str) -> None:
    data = hard_data(16)
    labels = data.labels % 2  # cat and dog only: no bird row
    labels[:2] = [0, 1]
    if layout == "wide":
        path = write_parquet(tmp_path / "wide.parquet", hard_columns(labels, data.probs))
        report = run(path)
    else:
        path = write_parquet(tmp_path / "list.parquet", {
            "label": [CLASSES[k] for k in labels],
            "probs": pa.array(data.probs.tolist(), pa.list_(pa.float64(), 3)),
        })
        report = run(path, classes=list(CLASSES))
    assert report["layout"]["classes"] == list(CLASSES)
    bird = report["per_class"][2]
    assert bird["class"] == "bird"
    assert bird["support"] == 0.0
    assert bird["share"] == 0.0
    assert bird["cross_entropy"] is None
    assert bird["kl_divergence"] is None
    assert bird["accuracy"] is None
    assert bird["mean_pred"] == pytest.approx(data.probs[:, 2].mean(), rel=RTOL)
    assert report["metrics"]["cross_entropy"] == pytest.approx(sk_ce(labels, data.probs), rel=RTOL)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_integer_labels_are_positions_of_named_columns(tmp_path: Path, kind: str) -> None:
    data = hard_data(17)
    columns = {"label": data.labels.astype(np.int64), **wide("p_", data.probs)}
    path = (write_parquet(tmp_path / "int.parquet", columns) if kind == "parquet"
            else write_csv(tmp_path / "int.csv", columns))
    report = run(path)
    assert report["layout"]["classes"] == list(CLASSES)
    assert report["metrics"]["cross_entropy"] == pytest.approx(sk_ce(data.labels, data.probs), rel=RTOL)
    for k, entry in enumerate(report["per_class"]):
        assert entry["support"] == float((data.labels == k).sum())


def test_integer_label_outside_the_positions_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = hard_data(17, n_rows=10)
    labels = data.labels.astype(np.int64)
    labels[3] = 3  # positions are 0..2
    path = write_parquet(tmp_path / "int.parquet", {"label": labels, **wide("p_", data.probs)})
    result = run_cli(capsys, "score", path, "-f", "json")
    assert result.code == 3, result.err
    assert "row 4" in result.err and "'label'" in result.err


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_integer_labels_match_integer_named_columns_by_name(tmp_path: Path, kind: str) -> None:
    data = hard_data(18)
    order = [2, 0, 1]  # the file's columns are p_2, p_0, p_1: position ≠ name
    columns = {"label": data.labels.astype(np.int64),
               **{f"p_{k}": data.probs[:, k] for k in order}}
    path = (write_parquet(tmp_path / "int.parquet", columns) if kind == "parquet"
            else write_csv(tmp_path / "int.csv", columns))
    report = run(path)
    assert report["layout"]["classes"] == ["2", "0", "1"]
    expected = sk_ce(data.labels, data.probs)
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)
    positional = sk_ce(data.labels, data.probs[:, order])
    assert not math.isclose(expected, positional, rel_tol=1e-3)  # the test can tell them apart
    for entry in report["per_class"]:
        assert entry["support"] == float((data.labels == int(entry["class"])).sum())


# --------------------------------------------------------------------------------------------
# Multilabel


def test_multilabel_is_the_mean_of_binary_log_losses(tmp_path: Path) -> None:
    rng = np.random.default_rng(19)
    names = ("a", "b", "c", "d")
    y = (rng.random((N_ROWS, len(names))) < [0.2, 0.5, 0.7, 0.1]).astype(np.int64)
    y[0] = 1
    y[1] = 0
    p = 1.0 / (1.0 + np.exp(-rng.normal(scale=2.0, size=(N_ROWS, len(names)))))
    path = write_parquet(tmp_path / "ml.parquet", {**wide("y_", y, names), **wide("p_", p, names)})
    report = run(path, multilabel=True, target="y_*", pred="p_*")
    per_label = [float(log_loss(y[:, k], p[:, k], labels=[0, 1])) for k in range(len(names))]
    assert report["layout"]["classes"] == list(names)
    assert report["metrics"]["cross_entropy"] == pytest.approx(np.mean(per_label), rel=RTOL)
    assert report["metrics"]["entropy_target"] == 0.0
    assert report["metrics"]["kl_divergence"] == pytest.approx(np.mean(per_label), rel=RTOL)
    hits = (p > 0.5) == (y == 1)
    assert report["metrics"]["accuracy"] == pytest.approx(hits.mean(), rel=RTOL)
    assert len(report["per_class"]) == len(names)
    for k, entry in enumerate(report["per_class"]):
        assert entry["class"] == names[k]
        assert entry["cross_entropy"] == pytest.approx(per_label[k], rel=RTOL)
        assert entry["support"] == float(y[:, k].sum())
        assert entry["accuracy"] == pytest.approx(hits[:, k].mean(), rel=RTOL)
        assert entry["mean_pred"] == pytest.approx(p[:, k].mean(), rel=RTOL)


def test_multilabel_columns_pair_by_label(tmp_path: Path) -> None:
    """Each prediction is scored against the 0/1 column of its own label, whatever the order of
    the columns in the file (here the targets are written in reverse)."""
    rng = np.random.default_rng(31)
    names = ("a", "b", "c")
    y = (rng.random((N_ROWS, len(names))) < [0.2, 0.5, 0.8]).astype(np.int64)
    p = 1.0 / (1.0 + np.exp(-rng.normal(scale=2.0, size=(N_ROWS, len(names)))))
    columns = {**{f"y_{n}": y[:, k] for k, n in reversed(list(enumerate(names)))}, **wide("p_", p, names)}
    path = write_parquet(tmp_path / "ml.parquet", columns)
    report = run(path, multilabel=True, target="y_*", pred="p_*")
    per_label = [float(log_loss(y[:, k], p[:, k], labels=[0, 1])) for k in range(len(names))]
    assert report["metrics"]["cross_entropy"] == pytest.approx(np.mean(per_label), rel=RTOL)
    for k, entry in enumerate(report["per_class"]):
        assert entry["class"] == names[k]
        assert entry["cross_entropy"] == pytest.approx(per_label[k], rel=RTOL)
        assert entry["support"] == float(y[:, k].sum())


# --------------------------------------------------------------------------------------------
# Validation flags


def test_renormalize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = hard_data(20, scale=1.0)
    assert (data.probs * 1.01 <= 1).all()  # scaled rows stay probabilities; only their sums are off
    scaled = write_parquet(tmp_path / "scaled.parquet", hard_columns(data.labels, data.probs * 1.01))
    exact = write_parquet(tmp_path / "exact.parquet", hard_columns(data.labels, data.probs))
    refused = run_cli(capsys, "score", scaled, "-f", "json")
    assert refused.code == 3, refused.err
    assert "sum" in refused.err
    renormalized = run(scaled, renormalize=True)
    assert "renorm:yes" in renormalized["signature"]
    assert_reports_agree(run(exact), renormalized, rel=1e-12)
    assert renormalized["metrics"]["cross_entropy"] == pytest.approx(
        sk_ce(data.labels, data.probs), rel=RTOL)


def test_renormalize_accepts_unnormalized_scores(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Scores above 1 (counts, unnormalized weights) are fine to renormalize; negatives are not."""
    data = hard_data(22, scale=1.0)
    scores = data.probs * 7.0  # most entries above 1
    assert (scores > 1).any()
    path = write_parquet(tmp_path / "scores.parquet", hard_columns(data.labels, scores))
    assert run_cli(capsys, "score", path, "-f", "json").code == 3
    renormalized = run(path, renormalize=True)
    assert renormalized["metrics"]["cross_entropy"] == pytest.approx(
        sk_ce(data.labels, data.probs), rel=RTOL)
    negative = scores.copy()
    negative[0, 0] = -1.0
    bad = write_parquet(tmp_path / "negative.parquet", hard_columns(data.labels, negative))
    refused = run_cli(capsys, "score", bad, "--renormalize", "-f", "json")
    assert refused.code == 3
    assert "row 1," in refused.err and ">= 0" in refused.err


def test_sum_tol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = hard_data(21, scale=1.0)
    q = data.probs * 1.01  # row sums 1.01: off by 0.01
    assert (q <= 1).all()
    path = write_parquet(tmp_path / "scaled.parquet", hard_columns(data.labels, q))
    assert run_cli(capsys, "score", path, "--sum-tol", "0.005", "-f", "json").code == 3
    result = run_cli(capsys, "score", path, "--sum-tol", "0.02", "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    assert "sum_tol:0.02" in report["signature"]
    # accepted rows are scored as written (never renormalized silently)
    losses = -np.log(q[np.arange(N_ROWS), data.labels])
    assert report["metrics"]["cross_entropy"] == pytest.approx(losses.mean(), rel=RTOL)


def _with_bad_rows(data: Hard) -> tuple[dict[str, Any], np.ndarray, dict[str, int]]:
    """Parquet columns with one kind of problem per bad row; the valid rows' mask; the counts."""
    labels: list[str | None] = [CLASSES[k] for k in data.labels]
    probs: list[list[float | None]] = data.probs.tolist()
    bad = {5: "missing_label", 9: "unknown_label", 14: "null", 20: "not_finite", 33: "out_of_range",
           41: "sum_off", 57: "sum_off"}
    labels[5] = None
    labels[9] = "fish"
    probs[14][0] = None
    probs[20][1] = math.inf
    probs[33] = [1.5, -0.25, -0.25]
    probs[41] = [0.5, 0.5, 0.5]
    probs[57] = [0.2, 0.2, 0.2]
    columns: dict[str, Any] = {"label": pa.array(labels, pa.string())}
    for k, c in enumerate(CLASSES):
        columns[f"p_{c}"] = pa.array([row[k] for row in probs], pa.float64())
    valid = np.ones(len(labels), dtype=bool)
    valid[list(bad)] = False
    counts: dict[str, int] = {}
    for reason in bad.values():
        counts[reason] = counts.get(reason, 0) + 1
    return columns, valid, counts


def test_on_invalid_skip_counts_by_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = hard_data(22)
    columns, valid, counts = _with_bad_rows(data)
    path = write_parquet(tmp_path / "dirty.parquet", columns)
    refused = run_cli(capsys, "score", path, "-f", "json")
    assert refused.code == 3, refused.err
    assert "7 invalid rows" in refused.err
    result = run_cli(capsys, "score", path, "--on-invalid", "skip", "-f", "json")
    assert result.code == 0, result.err
    assert "skipped 7" in result.err  # a warning on stderr, never silent
    report = load_json(result.out)
    rows = report["rows"]
    assert rows["read"] == N_ROWS
    assert rows["scored"] == N_ROWS - 7
    assert rows["skipped"] == 7
    assert rows["skipped_by_reason"] == counts
    assert "invalid:skip" in report["signature"]
    assert report["metrics"]["cross_entropy"] == pytest.approx(
        sk_ce(data.labels[valid], data.probs[valid]), rel=RTOL)


# --------------------------------------------------------------------------------------------
# Groups and worst rows


def test_by_region_matches_sklearn_on_each_slice(tmp_path: Path) -> None:
    data = hard_data(23, n_rows=150)
    rng = np.random.default_rng(230)
    region = np.array(["eu", "us", "asia"])[rng.integers(0, 3, size=150)]
    path = write_csv(tmp_path / "regions.csv",
                     {**hard_columns(data.labels, data.probs), "region": region})
    report = run(path, by=("region",), chunk_rows=16)
    assert report["layout"]["group_columns"] == ["region"]
    assert [g["by"] for g in report["groups"]] == [{"region": r} for r in sorted(set(region))]
    for group in report["groups"]:
        rows = region == group["by"]["region"]
        assert group["rows"] == int(rows.sum())
        assert group["metrics"]["cross_entropy"] == pytest.approx(
            sk_ce(data.labels[rows], data.probs[rows]), rel=RTOL)
        assert group["metrics"]["weight_sum"] == float(rows.sum())
        for k, entry in enumerate(group["per_class"]):
            assert entry["class"] == CLASSES[k]
            assert entry["support"] == float((data.labels[rows] == k).sum())
    assert report["metrics"]["cross_entropy"] == pytest.approx(sk_ce(data.labels, data.probs), rel=RTOL)


@pytest.mark.parametrize("chunk_rows", [65_536, 10])
def test_worst_rows(tmp_path: Path, chunk_rows: int) -> None:
    data = hard_data(24)
    ids = [f"r{i:04d}" for i in range(N_ROWS)]
    path = write_parquet(tmp_path / "w.parquet", {**hard_columns(data.labels, data.probs), "id": ids})
    report = run(path, id="id", worst=3, chunk_rows=chunk_rows)
    p_true = data.probs[np.arange(N_ROWS), data.labels]
    losses = -np.log(p_true)
    top = np.argsort(-losses)[:3]
    assert len(set(np.round(losses[top], 12))) == 3  # no ties: the order is defined
    worst = report["worst"]
    assert [w["row"] for w in worst] == [int(i) + 1 for i in top]  # 1-based data rows
    assert [w["id"] for w in worst] == [ids[i] for i in top]
    assert [w["label"] for w in worst] == [CLASSES[data.labels[i]] for i in top]
    assert [w["file"] for w in worst] == [str(path)] * 3
    for entry, i in zip(worst, top, strict=True):
        assert entry["p_true"] == pytest.approx(p_true[i], rel=RTOL)
        assert entry["cross_entropy"] == pytest.approx(losses[i], rel=RTOL)
    assert [w["cross_entropy"] for w in worst] == sorted((w["cross_entropy"] for w in worst), reverse=True)


def test_worst_rows_leave_out_zero_weights(tmp_path: Path) -> None:
    """Zero weight ≡ a dropped row: the worst rows are the highest losses among weighted rows,
    even where a zero-weight row has a higher loss."""
    data = hard_data(27)
    losses = -np.log(data.probs[np.arange(N_ROWS), data.labels])
    weights = np.ones(N_ROWS)
    weights[np.argsort(-losses)[:2]] = 0.0  # the two worst rows count for nothing
    path = write_parquet(tmp_path / "w.parquet", {**hard_columns(data.labels, data.probs), "w": weights})
    report = run(path, weight="w", worst=3)
    top = [i for i in np.argsort(-losses) if weights[i] > 0][:3]
    assert [w["row"] for w in report["worst"]] == [int(i) + 1 for i in top]


def test_worst_rows_across_files_count_rows_per_file(tmp_path: Path) -> None:
    data = hard_data(25)
    split = 50
    first = write_csv(tmp_path / "a.csv", hard_columns(data.labels[:split], data.probs[:split]))
    second = write_csv(tmp_path / "b.csv", hard_columns(data.labels[split:], data.probs[split:]))
    report = run([first, second], worst=4)
    losses = -np.log(data.probs[np.arange(N_ROWS), data.labels])
    top = np.argsort(-losses)[:4]
    expected = [(str(first), int(i) + 1) if i < split else (str(second), int(i) - split + 1) for i in top]
    assert [(w["file"], w["row"]) for w in report["worst"]] == expected


# --------------------------------------------------------------------------------------------
# Units and eps


@pytest.mark.parametrize(("base", "unit"), [("2", "bits"), ("10", "hartleys")])
def test_base(tmp_path: Path, base: str, unit: str) -> None:
    rng = np.random.default_rng(26)
    p = rng.dirichlet(np.ones(3), size=N_ROWS)  # soft targets: every unit metric is non-zero
    q = softmax(random_logits(rng, N_ROWS, 3), axis=1)
    path = write_parquet(tmp_path / "soft.parquet", {**wide("t_", p), **wide("q_", q)})
    nats = run(path, target="t_*", pred="q_*", worst=2)
    other = run(path, target="t_*", pred="q_*", worst=2, base=base)
    ln = math.log(float(base))
    assert nats["unit"] == "nats"
    assert other["unit"] == unit
    assert f"base:{base}" in other["signature"]
    for key in UNIT_METRICS:
        assert other["metrics"][key] == pytest.approx(nats["metrics"][key] / ln, rel=1e-12), key
    for key in UNITLESS_METRICS:
        assert other["metrics"][key] == pytest.approx(nats["metrics"][key], rel=1e-12), key
    assert other["metrics"]["perplexity"] == pytest.approx(
        math.exp(-xlogy(p, q).sum(axis=1).mean()), rel=RTOL)
    for mine, theirs in zip(nats["per_class"], other["per_class"], strict=True):
        for key in UNIT_CLASS_KEYS:
            assert theirs[key] == pytest.approx(mine[key] / ln, rel=1e-12), key
        for key in UNITLESS_CLASS_KEYS:
            assert theirs[key] == pytest.approx(mine[key], rel=1e-12), key
    for mine, theirs in zip(nats["worst"], other["worst"], strict=True):
        assert theirs["cross_entropy"] == pytest.approx(mine["cross_entropy"] / ln, rel=1e-12)


def _zero_on_true_class(tmp_path: Path) -> tuple[Path, Hard]:
    data = hard_data(27, n_rows=30)
    probs = data.probs.copy()
    probs[4] = [0.0, 0.6, 0.4]
    labels = data.labels.copy()
    labels[4] = 0  # a cat given probability 0
    return write_csv(tmp_path / "zero.csv", hard_columns(labels, probs)), Hard(labels, probs)


def test_eps_0_reports_an_infinite_loss_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, data = _zero_on_true_class(tmp_path)
    result = run_cli(capsys, "score", path, "--eps", "0", "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)  # strict: no Infinity constant
    assert report["metrics"]["cross_entropy"] is None
    assert report["metrics"]["perplexity"] is None
    assert report["per_class"][0]["cross_entropy"] is None
    dog = data.labels == 1  # other classes keep their finite numbers
    assert report["per_class"][1]["cross_entropy"] == pytest.approx(
        -np.log(data.probs[dog, 1]).mean(), rel=RTOL)
    table = run_cli(capsys, "score", path, "--eps", "0")
    assert table.code == 0, table.err
    line = next(ln for ln in table.out.splitlines() if "cross-entropy (log loss)" in ln)
    assert line.split()[-2] == "inf", line


def test_default_eps_clips_and_counts(tmp_path: Path) -> None:
    path, data = _zero_on_true_class(tmp_path)
    report = run(path)
    eps = float(np.finfo(np.float64).eps)
    losses = -np.log(np.maximum(data.probs[np.arange(30), data.labels], eps))
    assert report["metrics"]["cross_entropy"] == pytest.approx(losses.mean(), rel=RTOL)
    assert report["metrics"]["cross_entropy"] == pytest.approx(sk_ce(data.labels, data.probs), rel=RTOL)
    assert report["rows"]["clipped"] == 1
