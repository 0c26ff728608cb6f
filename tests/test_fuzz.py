"""Fuzzing the whole CLI with Hypothesis (SPEC sections 1 to 3 and 6).

Each example is a random prediction table (2-6 classes, 1-40 rows; text, integer or boolean
labels; float32 or float64 probabilities; wide, binary or list layout) with some rows broken on
purpose (NaN, inf, negatives, values above 1, rows off their sum, unknown and missing labels,
null cells). It is written as CSV and as Parquet and scored in-process with a random
``--chunk-rows`` and ``--on-invalid``. The only acceptable outcomes:

- exit 0 with JSON whose cross-entropy equals a NumPy oracle on the valid rows, and ``rows``
  accounting for every row (with ``--on-invalid skip``, ``skipped`` = the rows broken here);
- exit 3 with one message that names the file and, for invalid rows, the first one.

Never another exit code, never a traceback. ``XENT_FUZZ_EXAMPLES`` sets the number of examples
(default 60, enough for CI; run more on demand)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import Result, run_main
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("XENT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RTOL = 1e-9
ATOL = 1e-12  # a loss of exactly 0 (every true class at probability 1)
EPS = float(np.finfo(np.float64).eps)
SUM_TOL = 1e-3

# Class names as a file might hold them: pandas' NA spellings, booleans, integers, non-ASCII,
# spaces and quotes. None contains a prefix separator (_ - . :), so p_NAME strips back to NAME.
NAME_POOL = ["cat", "dog", "bird", "NA", "None", "null", "nan", "true", "false", "é", "猫", "x y",
             'q"t', "Zebra", "7", "12"]
UNKNOWN_TEXT = "zz unknown"
# How a row can be broken; each makes the row invalid by SPEC section 3.
CELL_DAMAGE = ["nan", "inf", "-inf", "negative", "above_one", "null_prob"]
ROW_DAMAGE = ["off_sum", "unknown_label", "null_label"]


# --------------------------------------------------------------------------------------------
# The generated table


@dataclass
class Table:
    layout: str  # "wide" (one column per class), "binary" (one column: P(positive)), "list"
    label_kind: str  # "text", "int" or "bool"
    names: list[str]  # class names, in class order
    dtype: str  # "float32" or "float64"
    labels: list[Any]  # as stored: str, int or bool; None = missing
    values: np.ndarray  # (rows, columns) float64, exactly the values the file holds
    nulls: np.ndarray  # (rows, columns) bool: the cell is null
    damaged: list[str | None]  # what was done to each row

    @property
    def columns(self) -> list[str]:
        return ["p_pos"] if self.layout == "binary" else [f"p_{name}" for name in self.names]

    def class_of(self, label: Any) -> int | None:
        """The class index of a stored label, or None if it is missing or unknown."""
        if label is None:
            return None
        if self.label_kind == "bool":
            return int(label)
        if self.label_kind == "int":
            return int(label) if 0 <= int(label) < len(self.names) else None
        return self.names.index(label) if label in self.names else None

    def valid_rows(self) -> list[int]:
        """The rows that SPEC section 3 calls valid, judged from the stored values alone."""
        good = []
        for i in range(len(self.labels)):
            row = self.values[i]
            ok = (self.class_of(self.labels[i]) is not None and not self.nulls[i].any()
                  and bool(np.isfinite(row).all()) and bool(((row >= 0) & (row <= 1)).all()))
            if ok and self.layout != "binary":
                ok = abs(float(row.sum()) - 1.0) <= SUM_TOL
            if ok:
                good.append(i)
        return good

    def cross_entropy(self, rows: list[int]) -> float:
        """Mean of −log q[true class], q clipped below at eps (SPEC section 1)."""
        losses = []
        for i in rows:
            y = self.class_of(self.labels[i])
            assert y is not None
            if self.layout == "binary":
                p = float(self.values[i, 0])
                q = p if y == 1 else 1.0 - p
            else:
                q = float(self.values[i, y])
            losses.append(-math.log(max(q, EPS)))
        return float(np.mean(losses))


@st.composite
def tables(draw: st.DrawFn) -> Table:
    layout = draw(st.sampled_from(["wide", "wide", "binary", "list"]))
    if layout == "binary":
        label_kind = draw(st.sampled_from(["int", "bool"]))
        names = ["0", "1"] if label_kind == "int" else ["false", "true"]
    else:
        label_kind = draw(st.sampled_from(["text", "text", "int"]))
        pool = NAME_POOL if label_kind == "text" else [n for n in NAME_POOL if not n.isdigit()]
        k = draw(st.integers(2, 6))
        names = draw(st.lists(st.sampled_from(pool), min_size=k, max_size=k, unique=True))
    n_rows = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    n_columns = 1 if layout == "binary" else len(names)
    if layout == "binary":
        values = rng.random((n_rows, 1))
    else:
        values = rng.dirichlet(np.ones(n_columns), n_rows)
        values[rng.random(values.shape) < 0.1] = 0.0  # exact zeros: clipping when on the label
        values[values.sum(axis=1) == 0, 0] = 1.0
        values /= values.sum(axis=1, keepdims=True)
    if label_kind == "bool":
        labels: list[Any] = [bool(v) for v in rng.integers(0, 2, n_rows)]
    elif label_kind == "int":
        labels = [int(v) for v in rng.integers(0, len(names), n_rows)]
    else:
        labels = [names[v] for v in rng.integers(0, len(names), n_rows)]

    kinds = CELL_DAMAGE + [d for d in ROW_DAMAGE if applies(d, layout, label_kind)]
    rate = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
    damaged = draw(st.lists(st.sampled_from(kinds), min_size=n_rows, max_size=n_rows))
    damaged_or_not: list[str | None] = [d if rng.random() < rate else None for d in damaged]
    values = values.astype(dtype).astype(np.float64)  # what a float32 file can hold
    nulls = np.zeros_like(values, dtype=bool)
    for i, damage in enumerate(damaged_or_not):
        if damage is not None:
            labels[i] = damage_row(damage, values[i], nulls[i], labels[i], label_kind, names, rng)
    return Table(layout, label_kind, names, dtype, labels, values, nulls, damaged_or_not)


def applies(damage: str, layout: str, label_kind: str) -> bool:
    if damage == "off_sum":
        return layout != "binary"  # a single P(positive) has no sum to be off
    if damage == "unknown_label":
        return label_kind != "bool"  # a Parquet boolean cannot hold a third value
    return True


def damage_row(damage: str, row: np.ndarray, nulls: np.ndarray, label: Any, label_kind: str,
               names: list[str], rng: np.random.Generator) -> Any:
    """Break one row in place; returns its (possibly changed) label."""
    j = int(rng.integers(0, len(row)))
    cells = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "negative": -0.25, "above_one": 1.5}
    if damage in cells:
        row[j] = cells[damage]
    elif damage == "null_prob":
        nulls[j] = True
        row[j] = math.nan
    elif damage == "off_sum":
        row *= 0.5
    elif damage == "unknown_label":
        return UNKNOWN_TEXT if label_kind == "text" else len(names) + 5
    elif damage == "null_label":
        return None
    return label


# --------------------------------------------------------------------------------------------
# Writing and running


def csv_cell(value: float, null: bool) -> str:
    if null:
        return ""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def label_cell(label: Any) -> str:
    if label is None:
        return ""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def write_csv(table: Table, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label", *table.columns])
        for i, label in enumerate(table.labels):
            writer.writerow([label_cell(label),
                             *(csv_cell(v, bool(m)) for v, m in zip(table.values[i], table.nulls[i],
                                                                     strict=True))])


def write_parquet(table: Table, path: Path, row_group_size: int) -> None:
    label_type = {"text": pa.string(), "int": pa.int64(), "bool": pa.bool_()}[table.label_kind]
    value_type = pa.float32() if table.dtype == "float32" else pa.float64()
    columns: dict[str, pa.Array] = {"label": pa.array(table.labels, label_type)}
    if table.layout == "list":
        rows = [[None if m else float(v) for v, m in zip(table.values[i], table.nulls[i], strict=True)]
                for i in range(len(table.labels))]
        columns["probs"] = pa.array(rows, pa.list_(value_type))
    else:
        for j, name in enumerate(table.columns):
            columns[name] = pa.array(table.values[:, j], value_type, mask=table.nulls[:, j])
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


# --------------------------------------------------------------------------------------------
# The property


def check_outcome(table: Table, path: Path, result: Result, on_invalid: str) -> None:
    """Exit 0 with the oracle's numbers, or exit 3 with a located message; nothing else."""
    note(f"{path.name}: exit {result.code}\n{result.err}")
    event(f"{table.layout} {path.suffix} --on-invalid {on_invalid}: exit {result.code}")
    assert "Traceback" not in result.err, result.err
    assert not result.warned, f"warnings would reach stderr: {result.warned}"
    assert result.code in (0, 3), f"exit {result.code}: {result.err}"
    good = table.valid_rows()
    bad = [i for i in range(len(table.labels)) if i not in good]
    assert len(bad) == sum(d is not None for d in table.damaged), "a damaged row stayed valid"
    if result.code == 0:
        assert not bad or on_invalid == "skip", f"{len(bad)} invalid rows accepted"
        assert good, "nothing valid to score, yet exit 0"
        report = json.loads(result.out)
        assert report["rows"]["read"] == len(table.labels)
        assert report["rows"]["scored"] == len(good)
        assert report["rows"]["skipped"] == len(bad)
        assert sum(report["rows"]["skipped_by_reason"].values()) == len(bad)
        assert report["layout"]["classes"] == table.names
        expected = table.cross_entropy(good)
        assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL, abs=ATOL)
        return
    assert result.out == ""
    assert result.err.startswith("xent: error: ") and result.err.count("xent: error:") == 1
    assert path.name in result.err, f"file not named: {result.err}"
    assert bad, f"exit 3 on a table without invalid rows: {result.err}"
    if on_invalid == "error":
        first = bad[0] + 1
        assert re.search(rf"\brow {first}\b", result.err), f"row {first} not named: {result.err}"
        noun = "row" if len(bad) == 1 else "rows"
        assert f"{len(bad)} invalid {noun}" in result.err, result.err
        if path.suffix == ".csv":
            assert re.search(rf"\bline {first + 1}\b", result.err), result.err
    else:
        assert not good, f"exit 3 with {len(good)} valid rows under --on-invalid skip"


@FUZZ
@given(table=tables(), chunk_rows=st.integers(1, 50), row_group_size=st.integers(1, 50),
       on_invalid=st.sampled_from(["error", "skip"]))
def test_random_tables_end_as_the_spec_says(table: Table, chunk_rows: int, row_group_size: int,
                                            on_invalid: str) -> None:
    with tempfile.TemporaryDirectory(prefix="xent-fuzz-") as directory:
        paths = [Path(directory) / "preds.parquet"]
        write_parquet(table, paths[0], row_group_size)
        if table.layout != "list":  # CSV has no list columns
            paths.append(Path(directory) / "preds.csv")
            write_csv(table, paths[1])
            note(paths[1].read_text(encoding="utf-8"))
        args: list[object] = ["-f", "json", "--chunk-rows", chunk_rows, "--on-invalid", on_invalid]
        if table.layout == "list":
            args += ["--classes", ",".join(table.names)]
        for path in paths:
            check_outcome(table, path, run_main("score", path, *args, record_warnings=True), on_invalid)


BAD_ROWS = {  # a bad row's text (columns label, p_a, p_b, note) → what the error expected there
    "a,1.5,0.1,x": "expected a probability in [0, 1]", "a,abc,0.5,x": "expected a number",
    ",0.5,0.5,x": "expected a label", "z,0.5,0.5,x": "expected one of the classes",
    "a,0.9,0.9,x": "expected a row sum within --sum-tol of 1", "a,0.9,0.1,x,9": "expected 4 fields, got 5",
}


@st.composite
def located_files(draw: st.DrawFn) -> tuple[str, int, int, str]:
    """A CSV of good rows with empty lines and two-line quoted notes between them, and one bad
    row: (the text, its row, the line it starts on, what the error expects), counted while
    writing."""
    lines = ["label,p_a,p_b,note"]
    n_rows = draw(st.integers(1, 60))
    bad_row = draw(st.integers(1, n_rows))
    bad = draw(st.sampled_from(sorted(BAD_ROWS)))
    bad_line = 0
    for row in range(1, n_rows + 1):
        lines += [""] * draw(st.integers(0, 2))
        if row == bad_row:
            bad_line = len(lines) + 1
            lines.append(bad)
        else:
            lines += (['a,0.25,0.75,"two', 'lines"'] if draw(st.booleans()) else ["b,0.5,0.5,x"])
    return "\n".join(lines) + "\n", bad_row, bad_line, BAD_ROWS[bad]


@FUZZ
@given(case=located_files(), in_ranges=st.booleans())
def test_a_bad_row_is_named_by_its_row_and_line(case: tuple[str, int, int, str], in_ranges: bool) -> None:
    """Rows are not lines once empty lines (which pyarrow skips) and quoted values over two lines
    come before a bad row; the error names the bad row's number and the line it starts on, read
    serially or, for a large file, in ranges (tiny ones here) cut at any line end, inside quotes
    too. Oracle: the row and line counted while the file was written."""
    from xentcli.io import readers

    text, row, line, expected = case
    with tempfile.TemporaryDirectory(prefix="xent-fuzz-") as directory, pytest.MonkeyPatch.context() as mp:
        if in_ranges:
            mp.setattr(readers, "CSV_RANGE_BYTES", 64)
            mp.setattr(readers, "CSV_BLOCK_BYTES", 128)
        path = Path(directory) / "preds.csv"
        path.write_text(text, encoding="utf-8")
        note(text)
        result = run_main("score", path, "--pred", "p_a,p_b")
    assert result.code == 3, result.err
    first = result.err_lines()[0]
    assert f"first at row {row} (line {line})" in first, first
    assert expected in first, first
