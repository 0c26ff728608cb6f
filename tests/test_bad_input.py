"""Bad input end to end (SPEC sections 3 and 6): every problem is one short message on stderr
that names the file, the 1-based data row (and the line, for CSV), the column and the offending
value, with a hint; nothing on stdout; exit 3 for data, 2 for usage, 4 for internal errors.
``--on-invalid skip`` drops and counts the bad rows, and the numbers equal scikit-learn's on the
good rows."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from helpers import Result, check_location, load_json, run_cli, run_proc, write_csv, write_parquet
from sklearn.metrics import log_loss

RTOL = 1e-9  # against scikit-learn on the good rows
CLASSES = ("cat", "dog", "bird")
HEADER = "label,p_cat,p_dog,p_bird"
GOOD_ROWS = ["cat,0.7,0.2,0.1", "dog,0.1,0.8,0.1", "bird,0.2,0.2,0.6", "cat,0.5,0.25,0.25"]
MAX_MESSAGE_LINES = 10  # "one short message": the error, a few located rows, a hint


# --------------------------------------------------------------------------------------------
# Message checks


def check_one_message(result: Result, code: int = 3) -> str:
    """Exit ``code``, nothing on stdout, one short message on stderr without a traceback."""
    assert result.code == code, result.err
    assert result.out == ""
    err = result.err
    assert "Traceback" not in err
    assert err.startswith("xent: error: "), err
    assert err.count("error:") == 1, err
    assert 0 < len(err.splitlines()) <= MAX_MESSAGE_LINES, err
    assert "hint" in err.lower(), f"no hint in: {err}"
    return err


def check_data_error(result: Result, path: Path, **where: Any) -> str:
    """A located data error: exit 3 and every part of the location that applies (``row``,
    ``line``, ``column``, ``value``)."""
    return check_location(check_one_message(result, 3), path, **where)


# --------------------------------------------------------------------------------------------
# One bad cell in a probability column


# (cell as written in the CSV, text the message must quote)
BAD_CELLS = [
    pytest.param("nan", "'nan'", id="nan"),
    pytest.param("NaN", "'NaN'", id="NaN"),
    pytest.param("", "null", id="empty"),
    pytest.param("inf", "'inf'", id="inf"),
    pytest.param("-inf", "'-inf'", id="minus-inf"),
    pytest.param("1e400", "1e400", id="overflow-1e400"),
    pytest.param("-0.1", "-0.1", id="negative"),
    pytest.param("1.5", "1.5", id="above-one"),
    pytest.param("abc", "'abc'", id="text"),
]


@pytest.mark.parametrize(("cell", "quoted"), BAD_CELLS)
def test_bad_probability_cell_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  cell: str, quoted: str) -> None:
    """Data row 3 is line 4 (the header is line 1)."""
    lines = [HEADER, GOOD_ROWS[0], GOOD_ROWS[1], f"bird,{cell},0.2,0.6", GOOD_ROWS[3]]
    path = write_csv(tmp_path / "preds.csv", lines)
    result = run_cli(capsys, "score", path, "--format", "json")
    check_data_error(result, path, row=3, line=4, column="p_cat", value=quoted)
    assert "expected" in result.err


@pytest.mark.parametrize(("cell", "quoted"), [pytest.param("abc", "'abc'", id="text"),
                                              pytest.param("nan", "'nan'", id="nan")])
def test_bad_cell_two_class_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                cell: str, quoted: str) -> None:
    """Two classes: the text cell must not turn p_cat into an ignored column (SPEC section 2)
    and the file into a binary one with p_dog alone."""
    lines = ["label,p_cat,p_dog", "cat,0.5,0.5", f"dog,{cell},0.5", "cat,0.9,0.1"]
    path = write_csv(tmp_path / "preds.csv", lines)
    result = run_cli(capsys, "score", path)
    err = check_data_error(result, path, row=2, line=3, column="p_cat", value=quoted)
    assert "1 invalid row" in err


# (Parquet value, text the message must quote)
BAD_PARQUET_VALUES = [
    pytest.param(float("nan"), "nan", id="nan"),
    pytest.param(None, "null", id="null"),
    pytest.param(float("inf"), "inf", id="inf"),
    pytest.param(-0.1, "-0.1", id="negative"),
    pytest.param(1.5, "1.5", id="above-one"),
]


@pytest.mark.parametrize(("value", "quoted"), BAD_PARQUET_VALUES)
def test_bad_probability_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 value: float | None, quoted: str) -> None:
    path = write_parquet(tmp_path / "preds.parquet", {
        "label": ["cat", "dog", "bird", "cat"],
        "p_cat": pa.array([0.7, 0.1, value, 0.5], pa.float64()),
        "p_dog": [0.2, 0.8, 0.2, 0.25],
        "p_bird": [0.1, 0.1, 0.6, 0.25],
    })
    result = run_cli(capsys, "score", path)
    err = check_data_error(result, path, row=3, column="p_cat", value=quoted)
    assert "line" not in err  # no lines in a binary format


def test_text_cell_in_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A text column that shares the prediction prefix is a prediction column; its bad cell is
    named, pyarrow's conversion error having no row in it."""
    path = write_parquet(tmp_path / "preds.parquet", {
        "label": ["cat", "dog", "bird", "cat"],
        "p_cat": ["0.7", "0.1", "abc", "0.5"],
        "p_dog": [0.2, 0.8, 0.2, 0.25],
        "p_bird": [0.1, 0.1, 0.6, 0.25],
    })
    result = run_cli(capsys, "score", path)
    check_data_error(result, path, row=3, column="p_cat", value="'abc'")


def test_bad_cell_via_subprocess(tmp_path: Path) -> None:
    lines = [HEADER, GOOD_ROWS[0], "dog,0.1,inf,0.1", GOOD_ROWS[2]]
    path = write_csv(tmp_path / "preds.csv", lines)
    result = run_proc("score", path)
    check_data_error(result, path, row=2, line=3, column="p_dog", value="'inf'")


def test_bad_cell_from_stdin_subprocess(tmp_path: Path) -> None:
    data = ("\n".join([HEADER, GOOD_ROWS[0], "dog,0.1,1.5,0.1"]) + "\n").encode()
    result = run_proc("score", "-", "-f", "json", stdin=data)
    assert result.code == 3 and result.out == ""
    assert "Traceback" not in result.err
    assert "stdin" in result.err
    assert re.search(r"\brow 2\b", result.err) and re.search(r"\bline 3\b", result.err)
    assert "p_dog" in result.err and "1.5" in result.err


# --------------------------------------------------------------------------------------------
# Row sums


def test_sum_off_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, GOOD_ROWS[0], "dog,0.3,0.6,0.3", GOOD_ROWS[2]])
    result = run_cli(capsys, "score", path)
    err = check_data_error(result, path, row=2, line=3, value="1.2")
    assert "--sum-tol" in err or "--renormalize" in err


def test_sum_off_passes_with_larger_tolerance(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, GOOD_ROWS[0], "dog,0.3,0.6,0.3", GOOD_ROWS[2]])
    result = run_cli(capsys, "score", path, "--sum-tol", "0.25", "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    assert report["rows"]["scored"] == 3
    assert "|sum_tol:0.25|" in report["signature"]
    # Without renormalizing, the loss is −log q of the label's own cell as written.
    expected = -(np.log(0.7) + np.log(0.6) + np.log(0.6)) / 3
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=1e-12)


def test_sum_off_passes_with_renormalize(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, GOOD_ROWS[0], "dog,0.3,0.6,0.3", GOOD_ROWS[2]])
    result = run_cli(capsys, "score", path, "--renormalize", "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    assert "|renorm:yes|" in report["signature"]
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.3], [0.2, 0.2, 0.6]])
    probs /= probs.sum(axis=1, keepdims=True)
    expected = log_loss([0, 1, 2], probs, labels=[0, 1, 2])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


def test_target_sum_off_names_the_target_columns(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    """A soft-target row that does not sum to 1 is the targets' fault, not the predictions', and
    --renormalize (which renormalizes predictions only) is not offered."""
    path = write_csv(tmp_path / "soft.csv", ["t_a,t_b,q_a,q_b", "0.5,0.5,0.3,0.7", "0.5,0.6,0.3,0.7"])
    for extra in ([], ["--renormalize"]):
        result = run_cli(capsys, "score", path, "--target", "t_*", "--pred", "q_*", *extra)
        err = check_data_error(result, path, row=2, line=3, column="t_a,t_b", value="1.1")
        assert "q_a" not in err and "--renormalize" not in err


def test_renormalize_of_a_zero_row(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, GOOD_ROWS[0], "dog,0,0,0"])
    result = run_cli(capsys, "score", path, "--renormalize")
    err = check_data_error(result, path, row=2, line=3, value="0.0")
    assert "pass --renormalize" not in err and "renormalized" in err


def test_weights_whose_sum_overflows(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Each weight is finite, but their sum is not: an error, not a mean of 0. Weights of 1e200
    are fine and give scikit-learn's number."""
    rows = ["label,p_a,p_b,w", "a,0.9,0.1,{w}", "b,0.5,0.5,{w}"]
    huge = write_csv(tmp_path / "huge.csv", [r.format(w="1e308") for r in rows])
    err = check_one_message(run_cli(capsys, "score", huge, "--weight", "w"), 3)
    assert "huge.csv" in err and "weights add up to" in err and "RuntimeWarning" not in err
    large = write_csv(tmp_path / "large.csv", [r.format(w="1e200") for r in rows])
    result = run_cli(capsys, "score", large, "--weight", "w", "-f", "json")
    assert result.code == 0, result.err
    expected = log_loss([0, 1], [[0.9, 0.1], [0.5, 0.5]], sample_weight=[1e200, 1e200])
    assert load_json(result.out)["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


# --------------------------------------------------------------------------------------------
# Labels


def test_unknown_label(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, GOOD_ROWS[0], "cow,0.3,0.3,0.4", GOOD_ROWS[2]])
    result = run_cli(capsys, "score", path)
    check_data_error(result, path, row=2, line=3, column="label", value="'cow'")


@pytest.mark.parametrize("positive", [None, "yes"])
def test_unknown_binary_label_names_what_was_expected(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path, positive: str | None) -> None:
    """One prediction column: the labels are 0/1 or true/false, or --positive and one other
    value; the message says so, and points to --positive."""
    path = write_csv(tmp_path / "yn.csv", ["y,p", "yes,0.8", "no,0.3", "maybe,0.5"])
    args = [] if positive is None else ["--positive", positive]
    err = check_data_error(run_cli(capsys, "score", path, *args), path, column="y")
    if positive is None:
        assert "expected 0/1 or true/false" in err and "--positive VALUE" in err
    else:
        assert re.search(r"\brow 3\b", err) and "'yes' (--positive) or one other value" in err


def test_logits_read_as_probabilities_point_to_scale(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    logits = pa.array([[2.0, -1.0], [0.3, 0.7]], pa.list_(pa.float64()))
    path = write_parquet(tmp_path / "l.parquet", {"label": [0, 1], "logits": logits})
    err = check_data_error(run_cli(capsys, "score", path), path, row=1, column="logits")
    assert "--scale logits" in err


@pytest.mark.parametrize(("bad", "why"), [("not json", "Expecting value"), ("[1, 2]", "a JSON array")])
def test_json_lines_bad_record(capsys: pytest.CaptureFixture[str], tmp_path: Path, bad: str,
                               why: str) -> None:
    """The first line that is no JSON object, by its row (blank lines are none) and its line."""
    records = ['{"label": "cat", "p_cat": 0.7, "p_dog": 0.2, "p_bird": 0.1}'] * 3
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join([records[0], "", *records[1:], bad]) + "\n", encoding="utf-8")
    err = check_data_error(run_cli(capsys, "score", path), path, row=4, line=5, value=bad)
    assert why in err


def test_json_lines_invalid_row_names_its_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """SPEC 3: for text formats also the line; blank lines between records are no rows."""
    good = '{"label": "cat", "p_cat": 0.7, "p_dog": 0.2, "p_bird": 0.1}'
    bad = '{"label": "cat", "p_cat": null, "p_dog": 0.2, "p_bird": 0.1}'
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join([good, "", "", good, bad]) + "\n", encoding="utf-8")
    check_data_error(run_cli(capsys, "score", path), path, row=3, line=5, column="p_cat", value="null")


def test_json_lines_label_of_two_types(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A key whose values change JSON type: the first such row, its line, key and value."""
    path = tmp_path / "preds.jsonl"
    path.write_text('{"label": 1, "p_a": 0.9, "p_b": 0.1}\n{"label": null, "p_a": 0.5, "p_b": 0.5}\n'
                    '{"label": "b", "p_a": 0.2, "p_b": 0.8}\n', encoding="utf-8")
    err = check_data_error(run_cli(capsys, "score", path), path, row=3, line=3, column="label",
                           value="'\"b\"'")
    assert "expected a number, as in row 1" in err and "one JSON type" in err


def test_json_lines_truncated_gzip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    probs = np.random.default_rng(3).dirichlet(np.ones(3), 2000)
    records = "".join(f'{{"label": "cat", "p_cat": {a!r}, "p_dog": {b!r}, "p_bird": {1 - a - b!r}}}\n'
                      for a, b, _ in probs)
    compressed = gzip.compress(records.encode())
    path = tmp_path / "preds.jsonl.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    check_one_message(run_cli(capsys, "score", path), 3)


def test_missing_label_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, GOOD_ROWS[0], GOOD_ROWS[1], ",0.3,0.3,0.4"])
    result = run_cli(capsys, "score", path)
    err = check_data_error(result, path, row=3, line=4, column="label")
    assert "label" in err.split("hint")[0]


def test_missing_label_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "preds.parquet", {
        "label": ["cat", None, "bird"],
        "p_cat": [0.7, 0.1, 0.2], "p_dog": [0.2, 0.8, 0.2], "p_bird": [0.1, 0.1, 0.6],
    })
    result = run_cli(capsys, "score", path)
    check_data_error(result, path, row=2, column="label", value="null")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_na_none_null_are_class_names(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                      fmt: str) -> None:
    """SPEC section 2: labels are read exactly as written; "NA" is a class called NA."""
    labels = ["NA", "None", "null", "NA", "null"]
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25],
                      [0.3, 0.3, 0.4]])
    if fmt == "csv":
        lines = ["label,p_NA,p_None,p_null"]
        lines += [f"{y}," + ",".join(repr(float(v)) for v in row)
                  for y, row in zip(labels, probs, strict=True)]
        path = write_csv(tmp_path / "preds.csv", lines)
    else:
        path = write_parquet(tmp_path / "preds.parquet", {"label": labels, "p_NA": probs[:, 0],
                                        "p_None": probs[:, 1], "p_null": probs[:, 2]})
    result = run_cli(capsys, "score", path, "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    assert report["layout"]["classes"] == ["NA", "None", "null"]
    assert report["rows"]["scored"] == 5 and report["rows"]["skipped"] == 0
    assert [c["support"] for c in report["per_class"]] == [2.0, 1.0, 2.0]
    expected = log_loss([0, 1, 2, 0, 2], probs, labels=[0, 1, 2])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


def test_na_label_with_list_column_and_classes(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "preds.parquet", {
        "label": ["NA", "b", "NA"],
        "probs": pa.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], pa.list_(pa.float64())),
    })
    result = run_cli(capsys, "score", path, "--classes", "NA,b", "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    expected = log_loss([0, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], labels=[0, 1])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


# --------------------------------------------------------------------------------------------
# Schema and file problems


@pytest.mark.parametrize(("flag", "name"), [("--label", "lable"), ("--pred", "p_cow"),
                                            ("--pred", "p_*x"), ("--weight", "w")])
def test_missing_column(capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str,
                        name: str) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, *GOOD_ROWS])
    result = run_cli(capsys, "score", path, flag, name)
    check_data_error(result, path, value=name)


def test_empty_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "preds.csv"
    path.write_bytes(b"")
    result = run_cli(capsys, "score", path)
    err = check_data_error(result, path)
    assert "empty" in err


@pytest.mark.parametrize("lines", [[HEADER], ["label,p_cat,p_dog"]], ids=["three", "two"])
def test_header_only_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                         lines: list[str]) -> None:
    path = write_csv(tmp_path / "preds.csv", lines)
    result = run_cli(capsys, "score", path)
    err = check_data_error(result, path)
    assert "header" in err or "no data rows" in err


def test_header_only_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "preds.parquet", {
        "label": pa.array([], pa.string()), "p_cat": pa.array([], pa.float64()),
        "p_dog": pa.array([], pa.float64()),
    })
    result = run_cli(capsys, "score", path)
    err = check_data_error(result, path)
    assert "no data rows" in err or "empty" in err


def test_truncated_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    whole = write_parquet(tmp_path / "whole.parquet", {
        "label": ["cat", "dog", "bird"] * 100,
        "p_cat": [0.7, 0.1, 0.2] * 100, "p_dog": [0.2, 0.8, 0.2] * 100,
        "p_bird": [0.1, 0.1, 0.6] * 100,
    })
    data = whole.read_bytes()
    path = tmp_path / "cut.parquet"
    path.write_bytes(data[: len(data) // 2])
    result = run_cli(capsys, "score", path)
    check_data_error(result, path)


def test_text_file_named_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "preds.parquet"
    path.write_text("\n".join([HEADER, *GOOD_ROWS]) + "\n")
    result = run_cli(capsys, "score", path)
    check_data_error(result, path)


def test_ragged_csv_row(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Data row 2, line 3, has a field too many."""
    path = write_csv(tmp_path / "preds.csv", [HEADER, GOOD_ROWS[0], "dog,0.1,0.8,0.1,0.0", GOOD_ROWS[2]])
    result = run_cli(capsys, "score", path)
    check_data_error(result, path, row=2, line=3, value="dog,0.1,0.8,0.1,0.0")


def test_several_bad_rows_count_and_first_few(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    bad = ["dog,nan,0.5,0.5", "dog,1.5,0.2,0.1", "cow,0.3,0.3,0.4", "cat,-0.1,0.6,0.5",
           "bird,0.3,0.3,inf", "cat,0.9,0.9,0.9", "dog,,0.5,0.5"]
    lines = [HEADER, GOOD_ROWS[0]] + [x for b in bad for x in (b, GOOD_ROWS[1])]
    path = write_csv(tmp_path / "preds.csv", lines)
    result = run_cli(capsys, "score", path)
    err = check_data_error(result, path, row=2, line=3)
    assert re.search(r"\b7 invalid rows\b", err), err
    # the first few are located (rows 2, 4, 6 on lines 3, 5, 7), the rest counted
    for row, line in ((4, 5), (6, 7)):
        assert re.search(rf"\brow {row} \(line {line}\)", err), err
    assert "more" in err


# --------------------------------------------------------------------------------------------
# --on-invalid skip


# 13 data rows; bad ones at 3, 5, 7, 8, 9, 10 (typed path: every cell parses as a number).
SKIP_ROWS = [
    ("cat", "0.7,0.2,0.1", None),
    ("dog", "0.1,0.8,0.1", None),
    ("bird", ",0.2,0.6", "null"),
    ("cat", "0.5,0.25,0.25", None),
    ("dog", "inf,0.5,0.25", "not_finite"),
    ("bird", "0.2,0.2,0.6", None),
    ("cat", "1.5,0.2,0.1", "out_of_range"),
    ("cow", "0.3,0.3,0.4", "unknown_label"),
    ("", "0.3,0.3,0.4", "missing_label"),
    ("dog", "0.6,0.6,0.1", "sum_off"),
    ("bird", "0.1,0.3,0.6", None),
    ("cat", "0.6,0.3,0.1", None),
    ("dog", "0.3,0.4,0.3", None),
]


def _skip_file(tmp_path: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    return write_csv(tmp_path / "preds.csv", [HEADER] + [f"{label},{cells}" for label, cells, _ in rows])


def _expected_on_good_rows(rows: list[tuple[str, str, str | None]]) -> tuple[float, dict[str, int]]:
    good = [(CLASSES.index(label), [float(v) for v in cells.split(",")])
            for label, cells, reason in rows if reason is None]
    ce = log_loss([g[0] for g in good], [g[1] for g in good], labels=[0, 1, 2])
    reasons: dict[str, int] = {}
    for _, _, reason in rows:
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
    return float(ce), reasons


def _check_skip_report(result: Result, rows: list[tuple[str, str, str | None]]) -> dict[str, Any]:
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert "warning" in result.err and "skip" in result.err
    report = load_json(result.out)
    ce, reasons = _expected_on_good_rows(rows)
    n_bad = sum(reasons.values())
    assert report["rows"]["read"] == len(rows)
    assert report["rows"]["scored"] == len(rows) - n_bad
    assert report["rows"]["skipped"] == n_bad
    assert report["rows"]["skipped_by_reason"] == reasons
    assert report["metrics"]["cross_entropy"] == pytest.approx(ce, rel=RTOL)
    assert report["signature"].endswith("|invalid:skip")
    return report


@pytest.mark.parametrize("chunk_rows", [3, 1, 65536])
def test_skip_counts_and_scores_good_rows(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          chunk_rows: int) -> None:
    path = _skip_file(tmp_path, SKIP_ROWS)
    result = run_cli(capsys, "score", path, "--on-invalid", "skip", "--chunk-rows", chunk_rows,
                     "-f", "json")
    _check_skip_report(result, SKIP_ROWS)


def test_skip_with_a_text_cell(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A non-numeric cell sends the CSV through the text path; the other reasons must not change
    (the empty cell is still "null")."""
    rows = [*SKIP_ROWS, ("bird", "abc,0.3,0.4", "not_a_number"), ("cat", "0.8,0.1,0.1", None)]
    path = _skip_file(tmp_path, rows)
    result = run_cli(capsys, "score", path, "--on-invalid", "skip", "--chunk-rows", 3, "-f", "json")
    _check_skip_report(result, rows)


def test_skip_parquet_over_chunk_boundaries(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]] * 4)
    labels = ["cat", "dog", "bird", "cat"] * 4
    p_cat: list[float | None] = list(probs[:, 0])
    p_cat[2], p_cat[3], p_cat[5], p_cat[9] = float("nan"), None, 1.5, -0.2
    labels[11] = "cow"
    labels[12] = None  # type: ignore[call-overload]
    path = write_parquet(tmp_path / "preds.parquet", {"label": labels, "p_cat": pa.array(p_cat, pa.float64()),
                                    "p_dog": probs[:, 1], "p_bird": probs[:, 2]})
    result = run_cli(capsys, "score", path, "--on-invalid", "skip", "--chunk-rows", 3, "-f", "json")
    assert result.code == 0, result.err
    assert "warning" in result.err
    report = load_json(result.out)
    assert report["rows"]["skipped_by_reason"] == {
        "not_finite": 1, "null": 1, "out_of_range": 2, "unknown_label": 1, "missing_label": 1}
    assert report["rows"]["skipped"] == 6
    good = [i for i in range(16) if i not in (2, 3, 5, 9, 11, 12)]
    expected = log_loss([CLASSES.index(labels[i]) for i in good], probs[good], labels=[0, 1, 2])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


def test_skip_warning_is_silenced_by_quiet(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    path = _skip_file(tmp_path, SKIP_ROWS)
    result = run_cli(capsys, "score", path, "--on-invalid", "skip", "-q", "-f", "json")
    assert result.code == 0 and result.err == ""


def test_skip_everything_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, "cow,0.3,0.3,0.4", "dog,1.5,0.1,0.1"])
    result = run_cli(capsys, "score", path, "--on-invalid", "skip")
    assert "all 2 rows were invalid" in check_one_message(result, 3)
    one = write_csv(tmp_path / "one.csv", [HEADER, "cow,0.3,0.3,0.4"])
    result = run_cli(capsys, "score", one, "--on-invalid", "skip")
    assert "the only row was invalid" in check_one_message(result, 3)


# --------------------------------------------------------------------------------------------
# Usage errors (exit 2) and internal errors (exit 4)


@pytest.mark.parametrize("args", [["--format", "xml"], ["--base", "3"], ["--eps", "-1"],
                                  ["--eps=-1"], ["--no-such-flag"], ["--on-invalid", "drop"],
                                  ["--chunk-rows", "0"], ["--precision", "-1"],
                                  # flags that do nothing for this file are refused, not ignored
                                  ["--positive", "cat"], ["--renormalize", "--scale", "logits"],
                                  ["--label", "label", "--target", "p_*"]],
                         ids=lambda a: " ".join(a))
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             args: list[str]) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, *GOOD_ROWS])
    result = run_cli(capsys, "score", path, *args)
    assert result.code == 2, result.err
    assert result.out == ""
    assert "Traceback" not in result.err
    assert result.err.strip()


def test_invalid_rows_over_several_files_say_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The count covers every file, so the message says how many, even when the rows shown all
    come from the first."""
    bad = [HEADER] + ["dog,0.3,0.6,0.3"] * 8
    first, second = write_csv(tmp_path / "m1.csv", bad), write_csv(tmp_path / "m2.csv", bad)
    err = check_one_message(run_cli(capsys, "score", first, second), 3)
    assert err.startswith("xent: error: 16 invalid rows in 2 files; first at ") and "m1.csv row 1" in err


@pytest.mark.parametrize("command", ["score", "compare"])
def test_standard_input_twice(capsys: pytest.CaptureFixture[str], command: str) -> None:
    result = run_cli(capsys, command, "-", "-")
    assert result.code == 2 and "more than once" in result.err


def test_usage_error_subprocess(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "preds.csv", [HEADER, *GOOD_ROWS])
    result = run_proc("score", path, "--format", "xml")
    assert result.code == 2 and result.out == ""
    assert "Traceback" not in result.err and "xml" in result.err


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.csv"
    result = run_proc("score", path)
    check_data_error(result, path)


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom from a test")


def test_internal_error_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("xentcli.pipeline.score", _boom)
    path = write_csv(tmp_path / "preds.csv", [HEADER, *GOOD_ROWS])
    result = run_cli(capsys, "score", path, "-f", "json")
    assert result.code == 4
    assert result.out == ""
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "--debug" in result.err
    assert "RuntimeError" in result.err


def test_internal_error_with_debug_shows_traceback(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("xentcli.pipeline.score", _boom)
    path = write_csv(tmp_path / "preds.csv", [HEADER, *GOOD_ROWS])
    result = run_cli(capsys, "score", path, "--debug")
    assert result.code == 4
    assert result.out == ""
    assert "Traceback" in result.err
    assert "boom from a test" in result.err


# --- a QA pass over unusual inputs ---------------------------------------------------------


def test_a_long_text_value_before_a_bad_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Locating a bad row's line reads the file with Python's csv module, which refuses values
    over 128 KiB: a 200 KB note before the bad row was an internal error (exit 4)."""
    path = tmp_path / "note.csv"
    path.write_text("label,p_a,p_b,note\n" + "a,0.7,0.3," + "x" * 200_000 + "\nb,0.4,0.9,ok\n")
    result = run_cli(capsys, "score", path, "--pred", "p_a,p_b")
    assert result.code == 3, result.err
    assert "row 2 (line 3)" in result.err and "value sum 1.3" in result.err


def test_a_row_longer_than_a_read_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A row over the CSV reader's block was reported in pyarrow's words ("straddling object
    straddles two block boundaries") with a hint about the file's format."""
    path = tmp_path / "long.csv"
    path.write_text("label,p_a,p_b,note\n" + "a,0.7,0.3," + "x" * (10 << 20) + "\nb,0.4,0.6,ok\n")
    result = run_cli(capsys, "score", path, "--pred", "p_a,p_b")
    assert result.code == 3
    assert f"{path}: a row too long to read" in result.err and "straddl" not in result.err


@pytest.mark.parametrize(("name", "content", "message"), [
    ("parquet.csv", "parquet", "Parquet by its bytes, named as csv"),
    ("parquet.arrow", "parquet", "Parquet by its bytes, named as arrow"),
    ("jsonl.csv", "jsonl", "JSON Lines by its bytes, named as csv"),
    ("gzip.csv", "gzip", "gzip-compressed data, read as plain csv"),
])
def test_a_file_named_as_another_format(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                        content: str, message: str) -> None:
    """Content and suffix disagree: the message says what the first bytes are (it said "not
    UTF-8 text; it looks like UTF-16", "Expected to read 827474256 metadata bytes", "no label
    column found"), and the right name or --input-format makes it score."""
    rows = "label,p_a,p_b\na,0.6,0.4\nb,0.3,0.7\n"
    path = tmp_path / name
    if content == "parquet":
        write_parquet(path, {"label": ["a", "b"], "p_a": [0.6, 0.3], "p_b": [0.4, 0.7]})
    elif content == "jsonl":
        path.write_text('{"label": "a", "p_a": 0.6, "p_b": 0.4}\n{"label": "b", "p_a": 0.3, "p_b": 0.7}\n')
    else:
        path.write_bytes(gzip.compress(rows.encode()))
    result = run_cli(capsys, "score", path)
    assert result.code == 3 and message in result.err, result.err
    if content != "gzip":
        assert run_cli(capsys, "score", path, "--input-format", content).code == 0


def test_a_file_this_user_may_not_read() -> None:
    """Permission problems were worded as format problems ("check that the file is complete and
    in the format its name says")."""
    from xentcli.io import readers
    from xentcli.io.sources import Source

    error = readers.unreadable(Source("/data/p.csv", "p.csv", "csv"),
                               PermissionError(13, "Permission denied", "/data/p.csv"))
    assert error.message == "p.csv: permission denied (the file cannot be read by this user)"
    assert "chmod" in (error.hint or "")


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.arrow"])
def test_an_empty_file_of_any_format(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    """An empty JSON Lines or Arrow file was reported in pyarrow's words ("Empty JSON stream",
    "Tried reading schema message, was null or length 0"), where CSV says the file is empty."""
    path = tmp_path / name
    path.write_bytes(b"")
    result = run_cli(capsys, "score", path)
    assert result.code == 3 and f"{path}: the file is empty" in result.err_lines()[0], result.err


def test_a_list_of_lists_is_a_schema_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A list<list<double>> prediction column was taken, and then every row was refused as
    "expected one value per class"; it is one schema error naming the column and its type."""
    nested = [[[0.6, 0.4]], [[0.3, 0.7]]]
    path = write_parquet(tmp_path / "nested.parquet", {"label": ["a", "b"], "probs": nested})
    result = run_cli(capsys, "score", path, "--classes", "a,b")
    assert result.code == 3
    assert result.err_lines()[0] == (f"xent: error: {path}: the list column 'probs' holds "
                                     "list<element: double> values, not numbers")


def test_a_csv_whose_header_starts_like_a_signature_is_read(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Only full signatures count: a CSV header starting PAR1 (or FEA1) is a CSV."""
    for head in ("PAR1_id", "FEA1"):
        path = write_csv(tmp_path / f"{head}.csv", [f"{head},label,p_a,p_b", "1,a,0.6,0.4", "2,b,0.3,0.7"])
        result = run_cli(capsys, "score", path, "--pred", "p_a,p_b", "-f", "json")
        assert result.code == 0, result.err
        assert result.report["rows"]["scored"] == 2
