"""xent compare: both models against scikit-learn, the pairing, the bootstrap interval, gates."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import load_json, run_cli, write_csv
from sklearn.metrics import accuracy_score, log_loss

RTOL = 1e-9
CLASSES = ["cat", "dog", "bird"]
Capture = pytest.CaptureFixture[str]


def _models(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a weak model and a better one for the same rows."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 1.5
    better = np.exp(logits)
    better /= better.sum(axis=1, keepdims=True)
    labels = (better.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    weak = np.exp(logits * 0.6 + rng.normal(size=(n, 3)) * 0.4)
    weak /= weak.sum(axis=1, keepdims=True)
    return labels, weak, better


def _write(path: Path, labels: np.ndarray, probs: np.ndarray, ids: np.ndarray | None = None) -> Path:
    columns = {"label": np.array(CLASSES)[labels], **{f"p_{c}": probs[:, k] for k, c in enumerate(CLASSES)}}
    if ids is not None:
        columns = {"row_id": ids, **columns}
    pq.write_table(pa.table(columns), path)
    return path


def _compare(capsys: Capture, *args: object) -> tuple[int, dict, str]:
    result = run_cli(capsys, "compare", *args, "-f", "json")
    return result.code, (load_json(result.out) if result.out else {}), result.err


def _sk(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(log_loss(labels, probs, labels=[0, 1, 2]))


def test_each_model_and_the_difference(tmp_path: Path, capsys: Capture) -> None:
    labels, weak, better = _models(2000, 1)
    base = _write(tmp_path / "base.parquet", labels, weak)
    new = _write(tmp_path / "new.parquet", labels, better)
    code, report, err = _compare(capsys, base, new, "--bootstrap", "400")
    assert code == 0, err
    ce = report["metrics"]["cross_entropy"]
    assert ce["base"] == pytest.approx(_sk(labels, weak), rel=RTOL)
    assert ce["new"] == pytest.approx(_sk(labels, better), rel=RTOL)
    assert ce["diff"] == pytest.approx(_sk(labels, better) - _sk(labels, weak), rel=1e-9)
    assert ce["ci_low"] < ce["diff"] < ce["ci_high"] < 0  # the better model is clearly better
    acc = report["metrics"]["accuracy"]
    expected = accuracy_score(labels, better.argmax(1)) - accuracy_score(labels, weak.argmax(1))
    assert acc["diff"] == pytest.approx(expected, abs=1e-12)
    assert report["rows"]["paired"] == 2000
    assert report["base"]["metrics"]["cross_entropy"] == ce["base"]
    assert set(report) == {"schema_version", "xent_version", "kind", "signature", "inputs", "unit", "join",
                           "rows", "bootstrap", "metrics", "per_class", "base", "new", "gates", "passed"}
    cat = report["per_class"][0]
    mask = labels == 0
    assert cat["class"] == "cat"
    assert cat["cross_entropy"]["new"] == pytest.approx(-np.log(better[mask, 0]).mean(), rel=RTOL)


def test_interval_narrows_with_rows_and_is_reproducible(tmp_path: Path, capsys: Capture) -> None:
    widths = []
    for n in (400, 6400):  # above 4096 rows the bucketed bootstrap is used
        labels, weak, better = _models(n, 2)
        base = _write(tmp_path / f"b{n}.parquet", labels, weak)
        new = _write(tmp_path / f"n{n}.parquet", labels, better)
        _, first, _ = _compare(capsys, base, new, "--seed", "3", "--bootstrap", "500")
        _, again, _ = _compare(capsys, base, new, "--seed", "3", "--bootstrap", "500")
        _, other, _ = _compare(capsys, base, new, "--seed", "4", "--bootstrap", "500")
        ce = first["metrics"]["cross_entropy"]
        assert again["metrics"]["cross_entropy"] == ce
        assert other["metrics"]["cross_entropy"]["ci_low"] != ce["ci_low"]
        widths.append(ce["ci_high"] - ce["ci_low"])
    # standard error ∝ 1/sqrt(n): 16x the rows, about a quarter of the width
    assert 0.15 < widths[1] / widths[0] < 0.4


def test_pairing_by_id_ignores_row_order(tmp_path: Path, capsys: Capture) -> None:
    labels, weak, better = _models(500, 5)
    ids = np.array([f"r{i}" for i in range(500)])
    order = np.random.default_rng(0).permutation(500)
    base = _write(tmp_path / "base.parquet", labels, weak, ids)
    shuffled = _write(tmp_path / "new.parquet", labels[order], better[order], ids[order])
    code, report, err = _compare(capsys, base, shuffled, "--id", "row_id", "--bootstrap", "0")
    assert code == 0, err
    assert report["join"] == "id:row_id"
    assert report["metrics"]["cross_entropy"]["diff"] == pytest.approx(
        _sk(labels, better) - _sk(labels, weak), rel=1e-9)
    code, _, err = _compare(capsys, base, shuffled, "--bootstrap", "0")  # by row order: labels differ
    assert (code == 3 and "line up" in err) or "labels" in err


def test_prediction_columns_in_another_order(tmp_path: Path, capsys: Capture) -> None:
    """The new file's columns in another order (p_bird first) are the same classes: each model
    against scikit-learn, per class by name."""
    labels, weak, better = _models(600, 5)
    base = _write(tmp_path / "base.parquet", labels, weak)
    table = pq.read_table(_write(tmp_path / "tmp.parquet", labels, better))
    new = tmp_path / "new.parquet"
    pq.write_table(table.select(["label", "p_bird", "p_cat", "p_dog"]), new)
    code, report, err = _compare(capsys, base, new, "--bootstrap", "0")
    assert code == 0, err
    ce = report["metrics"]["cross_entropy"]
    assert ce["base"] == pytest.approx(_sk(labels, weak), rel=RTOL)
    assert ce["new"] == pytest.approx(_sk(labels, better), rel=RTOL)
    for entry in report["per_class"]:
        k = CLASSES.index(entry["class"])
        assert entry["mean_pred"]["new"] == pytest.approx(better[:, k].mean(), rel=RTOL)
    # NEW's own report names its classes in the order of its per_class
    assert report["new"]["layout"]["classes"] == [e["class"] for e in report["new"]["per_class"]] == CLASSES


@pytest.mark.parametrize("new_kind", ["list", "binary"])
def test_classes_in_another_order_binary_and_list(tmp_path: Path, capsys: Capture, new_kind: str) -> None:
    """BASE's wide columns name the classes in one order (p_2, p_1, p_0, or p_1, p_0), NEW holds
    them in positions (a list column, or one binary column P(1)): each class's numbers stay with
    its name, and each model's CE is scikit-learn's."""
    k = 3 if new_kind == "list" else 2
    rng = np.random.default_rng(11)
    labels = rng.integers(0, k, 400)
    weak, better = rng.dirichlet(np.ones(k), 400), rng.dirichlet(np.ones(k) * 0.5, 400)
    base = tmp_path / "base.parquet"
    pq.write_table(pa.table({"label": labels, **{f"p_{c}": weak[:, c] for c in reversed(range(k))}}), base)
    new = tmp_path / "new.parquet"
    columns = ({"probs": pa.array(better.tolist(), pa.list_(pa.float64()))} if new_kind == "list"
               else {"p": better[:, 1]})
    pq.write_table(pa.table({"label": labels, **columns}), new)
    code, report, err = _compare(capsys, base, new, "--bootstrap", "200")
    assert code == 0, err
    ce = report["metrics"]["cross_entropy"]
    assert ce["base"] == pytest.approx(float(log_loss(labels, weak, labels=list(range(k)))), rel=RTOL)
    assert ce["new"] == pytest.approx(float(log_loss(labels, better, labels=list(range(k)))), rel=RTOL)
    assert [e["class"] for e in report["per_class"]] == [str(c) for c in reversed(range(k))]
    for entry in report["per_class"]:
        c = int(entry["class"])
        assert entry["mean_pred"]["base"] == pytest.approx(weak[:, c].mean(), rel=RTOL)
        assert entry["mean_pred"]["new"] == pytest.approx(better[:, c].mean(), rel=RTOL)
        recall = (better[labels == c].argmax(axis=1) == c).mean()
        assert entry["accuracy"]["new"] == pytest.approx(recall, rel=RTOL)


def test_every_per_class_key_is_compared_and_gated(tmp_path: Path, capsys: Capture) -> None:
    """compare's per-class rows hold every per-class key of SPEC section 1 (they held three, so a
    gate on per_class.kl_divergence[dog], which SPEC's grammar allows, was refused); a gate on
    groups, which compare does not report, is a usage error (exit 2), not a failed gate. Oracle:
    each class's mean −log q over its rows, and its share, by NumPy."""
    labels, weak, better = _models(100, 12)
    base, new = _write(tmp_path / "b.parquet", labels, weak), _write(tmp_path / "n.parquet", labels, better)
    code, report, err = _compare(capsys, base, new, "--bootstrap", "0")
    assert code == 0, err
    for k, entry in enumerate(report["per_class"]):
        assert set(entry) == {"class", "support", "share", "mean_pred", "cross_entropy", "loss_share",
                              "kl_divergence", "entropy_pred", "accuracy"}
        rows = labels == k
        for side, probs in (("base", weak), ("new", better)):
            assert entry["kl_divergence"][side] == pytest.approx(-np.log(probs[rows, k]).mean(), rel=RTOL)
            assert entry["share"][side] == pytest.approx(rows.mean(), rel=RTOL)
        assert entry["kl_divergence"]["diff"] == pytest.approx(
            np.log(weak[rows, k]).mean() - np.log(better[rows, k]).mean(), rel=1e-7)
    dog = CLASSES.index("dog")
    expected = np.log(weak[labels == dog, dog]).mean() - np.log(better[labels == dog, dog]).mean()
    for margin, code in ((-1e-9, 1), (1e-9, 0)):
        gate = f"per_class.kl_divergence[dog] > {expected + margin}"
        result = run_cli(capsys, "compare", base, new, "--fail-if", gate)
        assert result.code == code, result.err
    result = run_cli(capsys, "compare", base, new, "--fail-if", "groups.cross_entropy[*] > 1")
    assert result.code == 2 and "has no groups" in result.err


def test_rows_that_do_not_line_up(tmp_path: Path, capsys: Capture) -> None:
    labels, weak, better = _models(300, 6)
    base = _write(tmp_path / "base.parquet", labels, weak)
    fewer = _write(tmp_path / "new.parquet", labels[:-1], better[:-1])
    code, report, err = _compare(capsys, base, fewer)
    assert code == 3 and report == {}
    assert "don't line up" in err and "300" in err


def test_ids_twice_in_a_file_and_rows_skipped_in_one_file(tmp_path: Path, capsys: Capture) -> None:
    """An --id value twice in one file is refused (pairing would be ambiguous), and by position a
    row that is invalid and skipped in one file only leaves a row without its pair."""
    labels, weak, better = _models(200, 8)
    ids = np.array([f"r{i}" for i in range(200)])
    base = _write(tmp_path / "base.parquet", labels, weak, ids)
    twice = ids.copy()
    twice[150] = "r7"
    new = _write(tmp_path / "new.parquet", labels, better, twice)
    code, report, err = _compare(capsys, base, new, "--id", "row_id")
    assert code == 3 and report == {}
    assert f"id:row_id is not unique in {new}: 'r7' is there more than once" in err
    broken = better.copy()
    broken[40] = [0.9, 0.9, 0.9]  # sum off: skipped with --on-invalid skip, in new only
    new = _write(tmp_path / "new2.parquet", labels, broken)
    code, report, err = _compare(capsys, _write(tmp_path / "base2.parquet", labels, weak), new,
                                 "--on-invalid", "skip")
    assert code == 3 and report == {}
    assert "don't line up (row order)" in err and "1 row(s) that" in err and "first row 41" in err
    assert f"1 invalid row(s) of {new} were skipped" in err


def test_rows_with_different_labels_are_named(tmp_path: Path, capsys: Capture) -> None:
    """Rows that pair up but disagree on the label: the first such row and both labels."""
    labels, weak, better = _models(100, 9)
    other = labels.copy()
    other[30] = (labels[30] + 1) % 3
    base = _write(tmp_path / "base.parquet", labels, weak)
    new = _write(tmp_path / "new.parquet", other, better)
    code, report, err = _compare(capsys, base, new)
    assert code == 3 and report == {}
    expected = f"first at row 31: '{CLASSES[labels[30]]}' in {base}, '{CLASSES[other[30]]}' in {new}"
    assert expected in err, err


def test_gates_on_the_difference(tmp_path: Path, capsys: Capture) -> None:
    labels, weak, better = _models(800, 7)
    base = _write(tmp_path / "base.parquet", labels, weak)
    new = _write(tmp_path / "new.parquet", labels, better)
    code, report, _ = _compare(capsys, base, new, "--fail-if", "cross_entropy > 0", "--bootstrap", "0")
    assert code == 0 and report["passed"] is True
    code, report, err = _compare(capsys, new, base, "--fail-if", "cross_entropy > 0", "--bootstrap", "0")
    assert code == 1 and report["passed"] is False
    assert report["gates"][0]["value"] == pytest.approx(_sk(labels, weak) - _sk(labels, better), rel=1e-9)
    assert "gate failed" in err


def test_ties_follow_base_class_order_when_new_columns_are_reordered(tmp_path: Path, capsys: Capture) -> None:
    """SPEC: ties go to the lowest class index, in the class order the report shows (BASE's).
    NEW with the same predictions, its columns reordered, once lost every tied row (accuracy
    1 → 0, so 'accuracy < 0' failed an identical model). Oracle: np.argmax over BASE's order."""
    probs = np.array([[0.4, 0.4, 0.2], [0.3, 0.3, 0.4], [0.25, 0.5, 0.25], [0.45, 0.1, 0.45]])
    labels = np.array([0, 2, 1, 0])
    base = _write(tmp_path / "base.parquet", labels, probs)
    new = tmp_path / "new.parquet"
    pq.write_table(pq.read_table(base).select(["label", "p_dog", "p_bird", "p_cat"]), new)
    code, report, err = _compare(capsys, base, new, "--bootstrap", "50", "--fail-if", "accuracy < 0")
    assert code == 0, err
    hits = probs.argmax(axis=1) == labels
    assert report["metrics"]["accuracy"]["base"] == report["metrics"]["accuracy"]["new"] == hits.mean()
    assert report["metrics"]["accuracy"]["diff"] == 0
    assert report["metrics"]["accuracy"]["ci_low"] == report["metrics"]["accuracy"]["ci_high"] == 0
    for k, entry in enumerate(report["per_class"]):
        assert entry["class"] == CLASSES[k]
        assert entry["accuracy"]["new"] == pytest.approx(hits[labels == k].mean(), rel=RTOL)


def test_rows_with_different_weights_do_not_pair(tmp_path: Path, capsys: Capture) -> None:
    """--weight applies to both files; paired rows with different weights made a difference with
    a bootstrap interval that did not contain it (the interval used BASE's weights for both)."""
    lines = ["label,p_cat,p_dog,p_bird,w", "cat,0.6,0.3,0.1,1", "dog,0.2,0.7,0.1,1"]
    base = write_csv(tmp_path / "b.csv", lines)
    new = write_csv(tmp_path / "n.csv", [*lines[:2], "dog,0.2,0.7,0.1,5"])
    code, report, err = _compare(capsys, base, new, "--weight", "w")
    assert code == 3 and report == {}
    assert f"different weights (row order); first at row 2: 1.0 in {base}, 5.0 in {new}" in err


def test_compare_csv_has_row_counts_and_gates(tmp_path: Path, capsys: Capture) -> None:
    """compare's CSV, like score's, carries the row counts and each gate's outcome."""
    labels, weak, better = _models(50, 3)
    base, new = _write(tmp_path / "b.parquet", labels, weak), _write(tmp_path / "n.parquet", labels, better)
    result = run_cli(capsys, "compare", base, new, "-f", "csv", "--bootstrap", "0",
                     "--fail-if", "cross_entropy > 100", "--fail-if", "cross_entropy < -100")
    assert result.code == 0, result.err
    rows = list(csv.reader(io.StringIO(result.out)))
    assert ["rows", "", "paired", "50", "50", "", "", ""] in rows
    assert ["rows", "", "read", "50", "50", "", "", ""] in rows
    assert ["gate", "", "cross_entropy > 100", "", "", "pass", "", ""] in rows
    assert len([r for r in rows if r[0] == "class"]) == 3 * 8  # every per-class key


def test_label_positions_stay_with_new_columns_order(tmp_path: Path, capsys: Capture) -> None:
    """Integer labels may be class positions in each file's own column order: NEW's columns are
    then not put in BASE's order (its positions would name other classes: the same model was
    refused for "different labels"). Oracle: scikit-learn, and a difference of 0."""
    labels, weak, _ = _models(60, 8)
    base = tmp_path / "b.parquet"
    pq.write_table(pa.table({"label": labels, **{f"p_{c}": weak[:, k] for k, c in enumerate(CLASSES)}}), base)
    order = [1, 0, 2]  # dog, cat, bird
    new = tmp_path / "n.parquet"
    pq.write_table(pa.table({"label": np.argsort(order)[labels],
                             **{f"p_{CLASSES[k]}": weak[:, k] for k in order}}), new)
    code, report, err = _compare(capsys, base, new, "--bootstrap", "0")
    assert code == 0, err
    ce = report["metrics"]["cross_entropy"]
    assert ce["base"] == pytest.approx(_sk(labels, weak), rel=RTOL) and ce["diff"] == 0
