"""Bugs found in review, each pinned by the input that showed it. Oracles: scikit-learn and
numbers written out by hand."""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from helpers import load_json, run_cli, write_csv
from sklearn.metrics import log_loss

from xentcli import stream
from xentcli.compare import CompareOptions, compare
from xentcli.io import readers
from xentcli.pipeline import ScoreOptions

RTOL = 1e-9
Capture = pytest.CaptureFixture[str]


def _csv_rows(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    probs = rng.dirichlet([1.0, 1.0], n)
    labels = rng.integers(0, 2, n)
    rows = [f"{'ab'[y]},{float(p[0])!r},{float(p[1])!r}" for y, p in zip(labels, probs, strict=True)]
    lines = ["label,p_a,p_b", *rows]
    return lines, labels, probs


def test_text_reread_does_not_count_rows_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad cell past the first blocks makes pyarrow refuse the CSV; the file is read again as
    text, and what the first pass had collected (rows for compare) must not stay."""
    monkeypatch.setattr(stream, "MATH_BLOCK_ROWS", 64)
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)  # many blocks scored before the bad one
    lines, labels, probs = _csv_rows(np.random.default_rng(1), 3000)
    bad = list(lines)
    bad[2900] = "b,abc,0.5"  # data row 2899
    base = write_csv(tmp_path / "base.csv", lines)
    new = write_csv(tmp_path / "new.csv", bad)
    options = CompareOptions(ScoreOptions(on_invalid="skip", chunk_rows=256), bootstrap=0)
    with pytest.raises(Exception, match="don't line up"):
        compare([str(base)], [str(new)], options)  # one row fewer in new: refused, not double
    report = compare([str(base)], [str(base)], options)
    assert report.paired_rows == 3000
    expected = log_loss(labels, probs, labels=[0, 1])
    assert report.metrics["cross_entropy"].base == pytest.approx(expected, rel=RTOL)


def test_group_values_with_control_characters(tmp_path: Path, capsys: Capture) -> None:
    lines = ["label,p_a,p_b,g", "a,0.9,0.1,x\x1fy", "b,0.2,0.8,z", "a,0.6,0.4,z"]
    path = write_csv(tmp_path / "g.csv", lines)
    result = run_cli(capsys, "score", path, "--by", "g", "-f", "json")
    assert result.code == 0, result.err
    groups = {g["by"]["g"]: g for g in load_json(result.out)["groups"]}
    assert set(groups) == {"x\x1fy", "z"}
    assert groups["z"]["metrics"]["cross_entropy"] == pytest.approx(
        (-math.log(0.8) - math.log(0.6)) / 2, rel=RTOL)


def test_worst_rows_of_soft_targets_name_the_class(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "s.csv", ["t_cat,t_dog,p_cat,p_dog", "0.9,0.1,0.2,0.8", "0.2,0.8,0.3,0.7"])
    result = run_cli(capsys, "score", path, "--target", "t_*", "--pred", "p_*", "--worst", "1", "-f", "json")
    worst = load_json(result.out)["worst"]
    assert [w["label"] for w in worst] == ["cat"]
    assert worst[0]["cross_entropy"] == pytest.approx(-(0.9 * math.log(0.2) + 0.1 * math.log(0.8)), rel=RTOL)


def test_binary_log_probabilities_near_zero(tmp_path: Path, capsys: Capture) -> None:
    """log(1 − p) from log p = −1e−20 is log(1e−20), not −inf."""
    path = write_csv(tmp_path / "lp.csv", ["y,p", "1,-1e-20", "0,-1e-20"])
    result = run_cli(capsys, "score", path, "--scale", "logprobs", "-f", "json")
    assert result.code == 0, result.err
    assert result.err == ""
    expected = (1e-20 - math.log(1e-20)) / 2
    assert load_json(result.out)["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


def test_log_probabilities_must_be_a_distribution(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "lp.csv", ["label,p_a,p_b", "a,-0.1,-0.1"])
    result = run_cli(capsys, "score", path, "--scale", "logprobs")
    assert result.code == 3
    assert "row 1" in result.err and "sum" in result.err


def test_report_file_has_the_usual_mode(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "p.csv", ["label,p_a,p_b", "a,0.9,0.1"])
    out = tmp_path / "report.json"
    old = os.umask(0o022)
    try:
        assert run_cli(capsys, "score", path, "-o", out).code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_an_earlier_ragged_row_is_among_the_first_shown(tmp_path: Path, capsys: Capture) -> None:
    lines = ["label,p_a,p_b", "a,0.9,0.1", "a,0.9,0.1,9"] + ["a,1.5,0.1"] * 8
    result = run_cli(capsys, "score", write_csv(tmp_path / "r.csv", lines))
    assert result.code == 3
    first = result.err.splitlines()[0]
    assert "row 2 (line 3)" in first and "fields" in first


def test_missing_label_outranks_bad_text(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "m.csv", ["label,p_a,p_b", "a,0.9,0.1", ",abc,0.5"])
    result = run_cli(capsys, "score", path, "--on-invalid", "skip", "-f", "json")
    assert load_json(result.out)["rows"]["skipped_by_reason"] == {"missing_label": 1}


def test_group_metrics_match_sklearn_per_slice(tmp_path: Path, capsys: Capture) -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1.0, 1.0, 1.0], 600)
    labels = rng.integers(0, 3, 600)
    region = rng.choice(["eu", "us", "apac"], 600)
    rows = [f"{'abc'[y]},{float(p[0])!r},{float(p[1])!r},{float(p[2])!r},{r}"
            for y, p, r in zip(labels, probs, region, strict=True)]
    lines = ["label,p_a,p_b,p_c,region", *rows]
    path = write_csv(tmp_path / "g.csv", lines)
    result = run_cli(capsys, "score", path, "--by", "region", "--chunk-rows", "50", "-f", "json")
    groups = {g["by"]["region"]: g for g in load_json(result.out)["groups"]}
    for name in ("eu", "us", "apac"):
        mask = region == name
        expected = log_loss(labels[mask], probs[mask], labels=[0, 1, 2])
        assert groups[name]["rows"] == int(mask.sum())
        assert groups[name]["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)



def test_a_file_whose_only_row_is_ragged_says_so(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "r.csv", ["label,p_cat,p_dog", "cat,0.7,0.3,9"])
    result = run_cli(capsys, "score", path)
    assert result.code == 3
    assert "header only" not in result.err
    assert "row 1 (line 2)" in result.err and "3 fields, got 4" in result.err


def test_log_probability_minus_inf_is_log_zero(tmp_path: Path, capsys: Capture) -> None:
    """−inf is a valid log-probability (q = 0); a binary log-probability of 0 means certain."""
    path = write_csv(tmp_path / "lp.csv", ["label,p_a,p_b", "a,0,-inf", "b,-0.5,-0.9327521295671886"])
    result = run_cli(capsys, "score", path, "--scale", "logprobs", "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    assert report["metrics"]["cross_entropy"] == pytest.approx(0.9327521295671886 / 2, rel=RTOL)
    q2 = math.exp(-0.5)
    expected_entropy = -(q2 * -0.5 + (1 - q2) * -0.9327521295671886) / 2  # row 1 is certain: H = 0
    assert report["metrics"]["entropy_pred"] == pytest.approx(expected_entropy, rel=1e-6)
    binary = write_csv(tmp_path / "b.csv", ["y,p", "1,0", "0,-0.1"])
    result = run_cli(capsys, "score", binary, "--scale", "logprobs", "-f", "json")
    assert result.code == 0, result.err
    expected = -math.log(-math.expm1(-0.1)) / 2
    assert load_json(result.out)["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)
    above = write_csv(tmp_path / "c.csv", ["y,p", "1,0.5"])
    result = run_cli(capsys, "score", above, "--scale", "logprobs")
    assert result.code == 3 and "log-probability <= 0" in result.err


def test_compare_rows_survive_buffer_reuse(tmp_path: Path) -> None:
    """Decoded blocks live in a ring of reused buffers; the rows compare keeps must be taken while
    the block is scored, not after the file's pass, when later blocks have overwritten them.
    Oracle: scipy's entropy of each row, and sklearn's per-row log loss."""
    from scipy.stats import entropy

    from xentcli.compare import RowCollector
    from xentcli.pipeline import score

    rng = np.random.default_rng(7)
    n = 2000
    probs = rng.dirichlet([0.5, 1.0, 2.0], n)
    labels = rng.integers(0, 3, n)
    lines = ["label,p_a,p_b,p_c"] + [f"{'abc'[y]}," + ",".join(repr(float(v)) for v in p)
                                     for y, p in zip(labels, probs, strict=True)]
    path = write_csv(tmp_path / "p.csv", lines)
    collector = RowCollector(eps=float(np.finfo(float).eps), id_column=None)
    score([str(path)], ScoreOptions(chunk_rows=100), row_sink=collector)  # 20 chunks, ring of 4
    rows = collector.arrays()
    np.testing.assert_allclose(rows["pred_entropy"], entropy(probs, axis=1), rtol=1e-12)
    np.testing.assert_allclose(rows["loss"], -np.log(probs[np.arange(n), labels]), rtol=1e-12)
    np.testing.assert_array_equal(rows["correct"], probs.argmax(axis=1) == labels)


def test_group_block_whose_rows_are_all_skipped(tmp_path: Path, capsys: Capture) -> None:
    """--by with every row of the first block (or of the whole file) invalid and skipped: the
    groups' sums start from the later blocks; with no valid row at all, the usual error (it was
    an internal error). Oracle: sklearn on the valid row."""
    path = write_csv(tmp_path / "g.csv", ["label,p_a,p_b,g", "a,0.5,0.7,x", "b,0.9,0.9,y",
                                          "a,0.6,0.4,x"])
    result = run_cli(capsys, "score", path, "--by", "g", "--on-invalid", "skip", "--chunk-rows",
                     "2", "-f", "json")
    assert result.code == 0, result.err
    groups = load_json(result.out)["groups"]
    assert [(g["by"], g["rows"]) for g in groups] == [({"g": "x"}, 1)]
    assert groups[0]["metrics"]["cross_entropy"] == pytest.approx(
        log_loss([0], [[0.6, 0.4]], labels=[0, 1]), rel=RTOL)
    bad = write_csv(tmp_path / "bad.csv", ["label,p_a,p_b,g", "a,0.5,0.7,x", "b,0.9,0.9,y"])
    result = run_cli(capsys, "score", bad, "--by", "g", "--on-invalid", "skip", "-f", "json")
    assert result.code == 3
    assert "all 2 rows were invalid and skipped; nothing to score" in result.err


def test_group_values_that_read_the_same_are_one_group(tmp_path: Path, capsys: Capture) -> None:
    """An Arrow dictionary may hold a value twice: such a group is one group with all its rows
    (the summed-by-key path once counted only one of them). A null and the text "null" are two
    groups, as in SQL (they were merged into one "null" group, whose numbers were then neither's);
    the null one is null in JSON. Oracle: sklearn's log_loss on the rows of each group."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    labels = np.array([0, 1, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    columns = {"label": pa.array(["ab"[i] for i in labels]), "p_a": probs[:, 0], "p_b": probs[:, 1]}
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({**columns, "region": ["null", None, "eu", None, "eu"]}), nulls)
    twice = tmp_path / "twice.arrow"
    region = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 1, 0], pa.int32()),
                                            pa.array(["eu", "eu", "us"]))
    feather.write_feather(pa.table({**columns, "region": region}), twice)
    cases = ((nulls, {"null": [0], None: [1, 3], "eu": [2, 4]}), (twice, {"eu": [0, 1, 3, 4], "us": [2]}))
    for path, members in cases:
        result = run_cli(capsys, "score", path, "--by", "region", "-f", "json")
        assert result.code == 0, result.err
        groups = {g["by"]["region"]: g for g in load_json(result.out)["groups"]}
        assert set(groups) == set(members)
        for name, rows in members.items():
            assert groups[name]["rows"] == len(rows)
            expected = log_loss(labels[rows], probs[rows], labels=[0, 1])
            assert groups[name]["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("bad", ["a,1.5,0.1", "a,0.9,0.1,9"])
@pytest.mark.parametrize("layout", ["blank lines", "a value over two lines"])
def test_a_bad_row_is_located_on_its_line(tmp_path: Path, capsys: Capture, bad: str, layout: str) -> None:
    """Rows are not lines when empty lines (which pyarrow skips, and does not count) or a quoted
    value over two lines come before a bad row: a value out of range and a ragged row were both
    said to be on the line of their row number plus one (line 3 here), or the row number of an
    empty line. Oracle: the written lines, counted by hand."""
    if layout == "blank lines":
        lines = ["", "label,p_a,p_b", "", "a,0.9,0.1", "", bad, "b,0.2,0.8"]
    else:
        lines = ["label,p_a,p_b,note", 'a,0.9,0.1,"two', 'lines"', bad + ",x", "b,0.2,0.8,y"]
    path = write_csv(tmp_path / "located.csv", lines)
    line = lines.index(bad if layout == "blank lines" else bad + ",x") + 1
    result = run_cli(capsys, "score", path, "--pred", "p_a,p_b")
    assert result.code == 3, result.err
    assert f"row 2 (line {line})" in result.err_lines()[0], result.err


# --- a QA pass over --by, compare and gates ----------------------------------------------------


def test_prior_entropy_is_h_of_the_mean_target_as_written(tmp_path: Path, capsys: Capture) -> None:
    """SPEC: prior_entropy = H(p̄), p̄ = Σ w p / W. Soft targets that sum to 0.9995 (inside
    --sum-tol) were renormalised first, which made the prior smaller than entropy_target, and a
    single row's prior differ from its H(p). Oracle: scipy.special.entr."""
    from scipy.special import entr

    path = write_csv(tmp_path / "soft.csv", ["t_a,t_b,p_a,p_b", "0.5,0.4995,0.6,0.4", "0.5,0.4995,0.3,0.7"])
    result = run_cli(capsys, "score", path, "--target", "t_*", "--pred", "p_*", "-f", "json")
    assert result.code == 0, result.err
    metrics = load_json(result.out)["metrics"]
    expected = float(entr(np.array([0.5, 0.4995])).sum())
    assert metrics["prior_entropy"] == pytest.approx(expected, rel=1e-13)
    assert metrics["prior_entropy"] == pytest.approx(metrics["entropy_target"], rel=1e-13)  # equal rows
    ne = metrics["cross_entropy"] / expected
    assert metrics["normalized_cross_entropy"] == pytest.approx(ne, rel=1e-13)


def test_groups_come_in_number_order_then_text_then_null(tmp_path: Path, capsys: Capture) -> None:
    """Group values that are numbers are ordered by value (9 before 10; they were ordered as text,
    10 first), text after them, a null last."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = ["10", "9", "x", None, "-1.5", "9", "abc"]
    n = len(shard)
    pq.write_table(pa.table({"label": ["a", "b"] * 3 + ["a"], "p_a": [0.6] * n, "p_b": [0.4] * n,
                             "shard": shard}), tmp_path / "g.parquet")
    result = run_cli(capsys, "score", tmp_path / "g.parquet", "--by", "shard", "-f", "json")
    assert result.code == 0, result.err
    groups = load_json(result.out)["groups"]
    assert [g["by"]["shard"] for g in groups] == ["-1.5", "9", "10", "abc", "x", None]
    assert [g["rows"] for g in groups] == [1, 2, 1, 1, 1, 1]


def test_a_gate_on_a_group_name_two_groups_share_is_refused(tmp_path: Path, capsys: Capture) -> None:
    """Gate names join a group's values with ',': (a | b,c) and (a,b | c) both read a,b,c, and
    a gate on [a,b,c] silently gated one of them. It is now a usage error; [*] gates both.
    Oracle: log_loss of each row."""
    lines = ["label,p_a,p_b,g1,g2", 'a,0.9,0.1,a,"b,c"', 'a,0.2,0.8,"a,b",c']
    path = write_csv(tmp_path / "g.csv", lines)
    result = run_cli(capsys, "score", path, "--by", "g1", "--by", "g2", "--fail-if",
                     "groups.cross_entropy[a,b,c] > 1")
    assert result.code == 2
    assert "2 groups in the report read 'a,b,c'" in result.err
    result = run_cli(capsys, "score", path, "--by", "g1", "--by", "g2", "-f", "json", "--fail-if",
                     "groups.cross_entropy[*] > 1")
    assert result.code == 1
    values = sorted(g["value"] for g in load_json(result.out)["gates"])
    assert values == pytest.approx(sorted([-math.log(0.9), -math.log(0.2)]), rel=RTOL)


def test_group_column_given_twice_is_a_usage_error(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "g.csv", ["label,p_a,p_b,g", "a,0.9,0.1,x"])
    result = run_cli(capsys, "score", path, "--by", "g", "--by", "g")
    assert result.code == 2 and "--by 'g' is given more than once" in result.err


def test_a_gate_failing_at_its_boundary_shows_numbers_that_differ(tmp_path: Path, capsys: Capture) -> None:
    """A gate that fails by less than the fourth decimal said 'value 0.6016, threshold 0.6016'."""
    lines, labels, probs = _csv_rows(np.random.default_rng(4), 50)
    path = write_csv(tmp_path / "p.csv", lines)
    ce = float(log_loss(labels, probs, labels=[0, 1]))
    threshold = float(np.nextafter(ce * (1 - 1e-9), 0))  # below ce, the same to nine digits
    result = run_cli(capsys, "score", path, "--fail-if", f"cross_entropy > {threshold!r}")
    assert result.code == 1
    line = next(line for line in result.err_lines() if line.startswith("gate failed"))
    shown = re.search(r"value (\S+), threshold (\S+)\)", line)
    assert shown is not None and shown[1] != shown[2], line
    assert float(shown[1]) > float(shown[2])


def test_a_text_label_after_class_positions_is_named_as_such(tmp_path: Path, capsys: Capture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-number labels in the first block are class positions; a text label after them was
    refused as "value 'b'; expected one of the classes ('a' or 'b')", which contradicts itself."""
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1024)  # the types come from the first 1 KiB
    path = write_csv(tmp_path / "late.csv", ["label,p_a,p_b", *["0,0.7,0.3"] * 300, "b,0.4,0.6"])
    result = run_cli(capsys, "score", path)
    assert result.code == 3
    assert "value 'b'; expected a class position 0..1" in result.err
    assert "either class names or class positions, not both" in result.err


# --------------------------------------------------------------------------------------------
# From the QA sweep of scales and binary files (oracles: SciPy, scikit-learn)


@pytest.mark.parametrize("lines,column", [
    (["label,lp_a,lp_b", "a,0.0005,-inf", "b,-2,-0.1"], "lp_a"),  # p = 1.0005, within --sum-tol
    (["label,lp", "1,0.0005", "0,-0.1"], "lp"),  # binary
])
def test_a_log_probability_above_zero_is_refused(tmp_path: Path, capsys: Capture, lines: list[str],
                                                 column: str) -> None:
    """exp of it is a probability above 1: it used to pass within --sum-tol and give a negative
    cross-entropy (−0.0005)."""
    path = write_csv(tmp_path / "lp.csv", lines)
    result = run_cli(capsys, "score", path, "--scale", "logprobs", "-f", "json")
    assert result.code == 3
    assert f"column '{column}': value '0.0005'; expected a log-probability <= 0" in result.err


def test_a_target_out_of_range_is_named_as_a_probability(tmp_path: Path, capsys: Capture) -> None:
    """Targets are probabilities whatever --scale the predictions have."""
    path = write_csv(tmp_path / "t.csv", ["t_a,t_b,p_a,p_b", "1.01,0,-0.1,-2"])
    result = run_cli(capsys, "score", path, "--target", "t_*", "--pred", "p_*", "--scale", "logprobs")
    assert result.code == 3
    assert "column 't_a': value '1.01'; expected a probability in [0, 1]" in result.err


@pytest.mark.parametrize("scale", ["probs", "logits"])
def test_binary_soft_targets(tmp_path: Path, capsys: Capture, scale: str) -> None:
    """One target column P(1) against one prediction column P(1) (or its logit): scored as the
    pair [1 − t, t]; it used to be refused for a row sum off 1. Oracle: SciPy."""
    from scipy.special import expit, rel_entr, xlogy

    t = np.array([0.3, 0.9, 1.0, 0.0])
    column = np.array([0.4, 0.8, 0.5, 0.1]) if scale == "probs" else np.array([-0.4, 1.8, 0.0, -3.0])
    q = column if scale == "probs" else expit(column)
    path = write_csv(tmp_path / "b.csv", ["t,p", *(f"{a!r},{b!r}" for a, b in zip(t.tolist(), column.tolist(),
                                                                                  strict=True))])
    report = load_json(run_cli(capsys, "score", path, "--target", "t", "--pred", "p", "--scale", scale,
                               "-f", "json").out)
    targets, preds = np.stack([1 - t, t], axis=1), np.stack([1 - q, q], axis=1)
    assert report["layout"]["classes"] == ["0", "1"]
    metrics = report["metrics"]
    assert metrics["cross_entropy"] == pytest.approx(-xlogy(targets, preds).sum(1).mean(), rel=1e-12)
    assert metrics["kl_divergence"] == pytest.approx(rel_entr(targets, preds).sum(1).mean(), rel=1e-12)
    assert metrics["entropy_target"] == pytest.approx(-xlogy(targets, targets).sum(1).mean(), rel=1e-12)


def test_boolean_labels_take_positive_in_any_case(tmp_path: Path, capsys: Capture) -> None:
    """A Parquet boolean label with --positive False: the message used to read "value 'False';
    expected 'False' (--positive) or one other value". Oracle: scikit-learn."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "b.parquet"
    labels, p_false = [True, False, True], [0.2, 0.7, 0.4]
    pq.write_table(pa.table({"label": labels, "p": p_false}), path)
    report = load_json(run_cli(capsys, "score", path, "--positive", "False", "-f", "json").out)
    assert report["layout"]["classes"] == ["true", "false"]  # negative first
    positive = [not y for y in labels]
    expected = log_loss(positive, p_false, labels=[False, True])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=1e-12)
    refused = run_cli(capsys, "score", path, "--positive", "yes")
    assert refused.code == 2 and "holds booleans" in refused.err


def test_a_certain_right_row_has_zero_loss_not_minus_zero(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "p.csv", ["label,p", "1,1", "0,0"])
    report = load_json(run_cli(capsys, "score", path, "--worst", "2", "-f", "json").out)
    assert [math.copysign(1.0, w["cross_entropy"]) for w in report["worst"]] == [1.0, 1.0]


@pytest.mark.parametrize("seed", range(4))
def test_float32_columns_ties_and_accuracy(tmp_path: Path, capsys: Capture, seed: int) -> None:
    """float32 prediction columns: accuracy and per-class recall against np.argmax (ties to the
    lowest class index) and scikit-learn, with many exact ties, values an ulp apart, and blocks
    with invalid rows (skipped) or clipped values. (A float32 search for maxima and ties was
    measured against this test, and dropped: see bench/NOTES.md.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.metrics import accuracy_score, recall_score

    rng = np.random.default_rng(seed)
    n, k = 5000, 4
    probs = rng.dirichlet(np.ones(k), n).astype(np.float32)
    tie = rng.random(n) < 0.2  # exact ties between two classes at the top
    probs[tie, 1] = probs[tie].max(axis=1)
    near = rng.random(n) < 0.1  # class 2 an ulp below the top
    top = probs[near].max(axis=1)
    probs[near, 2] = np.nextafter(top, np.float32(0))
    probs /= probs.sum(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    if seed == 1:
        probs[::97, 3] = 0.0  # values below eps: the block's logs are clipped
        probs[::97] /= probs[::97].sum(axis=1, keepdims=True)
    labels = rng.integers(0, k, n)
    cells = probs.copy()
    if seed == 2:
        cells[::500, 0] = np.nan  # invalid rows, skipped
    path = tmp_path / "f32.parquet"
    pq.write_table(pa.table({"label": labels, **{f"p_{j}": cells[:, j] for j in range(k)}}), path)
    report = load_json(run_cli(capsys, "score", path, "--on-invalid", "skip",
                               "--chunk-rows", "1000", "-f", "json", "-q").out)
    valid = ~np.isnan(cells).any(axis=1)
    predicted = probs[valid].argmax(axis=1)
    assert report["rows"]["scored"] == int(valid.sum())
    assert report["metrics"]["accuracy"] == pytest.approx(accuracy_score(labels[valid], predicted), rel=1e-12)
    recalls = recall_score(labels[valid], predicted, labels=list(range(k)), average=None, zero_division=0)
    for entry, recall in zip(report["per_class"], recalls, strict=True):
        assert entry["accuracy"] == pytest.approx(recall, rel=1e-12)


def test_positive_is_refused_with_binary_soft_targets(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "b.csv", ["t,p", "0.3,0.4", "0.9,0.8"])
    result = run_cli(capsys, "score", path, "--target", "t", "--pred", "p", "--positive", "0")
    assert result.code == 2 and "soft targets" in result.err


def test_inspect_names_binary_soft_target_classes(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "b.csv", ["t,p", "0.3,0.4"])
    out = run_cli(capsys, "inspect", path, "--target", "t", "--pred", "p").out
    assert "0 and 1: the target column holds P(1), as the prediction column does" in out


@pytest.mark.parametrize("value", ["1e-17", "2.3841858e-07"])
def test_a_log_probability_just_above_zero_is_refused_with_a_hint(tmp_path: Path, capsys: Capture,
                                                                 value: str) -> None:
    """1e-17 passed (exp rounds it to 1) and gave a loss of −1e-17; float32 log-softmax rounding
    makes such values, and the hint says what to do."""
    path = write_csv(tmp_path / "lp.csv", ["label,lp_a,lp_b", f"a,{value},-40"])
    result = run_cli(capsys, "score", path, "--scale", "logprobs")
    assert result.code == 3
    assert f"value '{value}'; expected a log-probability <= 0" in result.err
    assert "clip them at 0" in result.err
