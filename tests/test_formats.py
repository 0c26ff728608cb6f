"""Every input format of SPEC section 2 carries the same predictions to the same number, and the
report formats of section 4 carry that number out.

One seeded data set (a text ``label`` column and ``p_cat,p_dog,p_bird`` float64 probabilities, the
softmax of random logits) is written by the test in every format, scored through the CLI with
``-f json``, and checked against scikit-learn's ``log_loss`` (rtol 1e-9: same formula, another
summation order). Formats are written by pyarrow or by hand (floats with ``repr`` so that text
formats round-trip exactly), never by xent.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from helpers import load_json, run_cli, run_proc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import softmax
from sklearn.metrics import log_loss

from xentcli import ScoreOptions, score
from xentcli.io.layout import LayoutRequest

RTOL = 1e-9  # against scikit-learn
SAME = 1e-12  # the same data read two ways (SPEC 1: chunking changes nothing beyond 1e-12)
CLASSES = ("cat", "dog", "bird")
PRED_COLUMNS = tuple(f"p_{c}" for c in CLASSES)
N_ROWS = 90


# --------------------------------------------------------------------------------------------
# Running the CLI


def score_json(capsys: pytest.CaptureFixture[str], *args: object) -> dict[str, Any]:
    result = run_cli(capsys, "score", *args, "-f", "json")
    assert result.code == 0, result.err
    return load_json(result.out)


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Data:
    labels: np.ndarray  # (rows,) class indices into CLASSES
    probs: np.ndarray  # (rows, classes) float64, softmax of random logits

    def table(self) -> pa.Table:
        columns: dict[str, pa.Array] = {
            "label": pa.array([CLASSES[k] for k in self.labels], pa.string())}
        for k, name in enumerate(PRED_COLUMNS):
            columns[name] = pa.array(self.probs[:, k], pa.float64())
        return pa.table(columns)

    def rows(self, start: int, stop: int) -> Data:
        return Data(self.labels[start:stop], self.probs[start:stop])

    def text(self, delimiter: str = ",") -> str:
        lines = [delimiter.join(("label", *PRED_COLUMNS))]
        for label, row in zip(self.labels, self.probs, strict=True):
            lines.append(delimiter.join([CLASSES[label], *(repr(float(v)) for v in row)]))
        return "\n".join(lines) + "\n"


def make_data(n_rows: int = N_ROWS, seed: int = 20240601) -> Data:
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(scale=2.0, size=(n_rows, len(CLASSES))), axis=1)
    labels = rng.integers(0, len(CLASSES), size=n_rows)
    labels[: len(CLASSES)] = np.arange(len(CLASSES))  # every class occurs
    return Data(labels, probs)


DATA = make_data()


def sklearn_ce(data: Data) -> float:
    return float(log_loss(data.labels, data.probs, labels=list(range(len(CLASSES)))))


EXPECTED_CE = sklearn_ce(DATA)


def numpy_class_ce(data: Data, k: int) -> float:
    """Mean −log q_k over the rows of class k (SPEC 1 per-class cross_entropy)."""
    rows = data.labels == k
    return float(-np.log(data.probs[rows, k]).mean())


def assert_matches(report: dict[str, Any], data: Data = DATA) -> None:
    assert report["layout"]["classes"] == list(CLASSES)
    assert report["rows"]["read"] == report["rows"]["scored"] == len(data.labels)
    assert report["metrics"]["cross_entropy"] == pytest.approx(sklearn_ce(data), rel=RTOL)


# --------------------------------------------------------------------------------------------
# Writers: one per format, each by pyarrow or by hand


def _compress(payload: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return gzip.compress(payload)
    if compression == "bz2":
        return bz2.compress(payload)
    if compression == "zstd":
        return bytes(pa.compress(payload, codec="zstd", asbytes=True))
    return payload


def write_text(path: Path, data: Data, delimiter: str = ",", compression: str | None = None) -> None:
    path.write_bytes(_compress(data.text(delimiter).encode("utf-8"), compression))


def write_ipc_file(path: Path, data: Data) -> None:
    table = data.table()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=25)


def write_ipc_stream(path: Path, data: Data) -> None:
    table = data.table()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=25)


def jsonl_text(data: Data) -> str:
    lines = []
    for label, row in zip(data.labels, data.probs, strict=True):
        record = {"label": CLASSES[label], **{c: float(v) for c, v in zip(PRED_COLUMNS, row, strict=True)}}
        lines.append(json.dumps(record))  # json writes floats with repr: exact round trip
    return "\n".join(lines) + "\n"


def write_jsonl(path: Path, data: Data) -> None:
    path.write_text(jsonl_text(data), encoding="utf-8")


WRITERS: dict[str, Callable[[Path, Data], None]] = {
    "preds.csv": write_text,
    "preds.tsv": lambda p, d: write_text(p, d, "\t"),
    "preds.csv.gz": lambda p, d: write_text(p, d, ",", "gzip"),
    "preds.csv.zst": lambda p, d: write_text(p, d, ",", "zstd"),
    "preds.csv.bz2": lambda p, d: write_text(p, d, ",", "bz2"),
    "preds.tsv.gz": lambda p, d: write_text(p, d, "\t", "gzip"),
    "preds.parquet": lambda p, d: pq.write_table(d.table(), p, row_group_size=40),
    "preds.pq": lambda p, d: pq.write_table(d.table(), p),
    "preds.arrow": write_ipc_file,
    "preds.feather": lambda p, d: feather.write_feather(d.table(), str(p), chunksize=30),
    "file.ipc": write_ipc_file,
    "stream.ipc": write_ipc_stream,
    "stream.arrow": write_ipc_stream,
    "preds.jsonl": write_jsonl,
    "preds.ndjson": write_jsonl,
}


# --------------------------------------------------------------------------------------------
# Every format, one number


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_format_gives_sklearns_cross_entropy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = tmp_path / name
    WRITERS[name](path, DATA)
    report = score_json(capsys, path)
    assert_matches(report)
    assert report["inputs"] == [str(path)]
    assert report["layout"]["pred_columns"] == list(PRED_COLUMNS)
    assert report["layout"]["label_column"] == "label"


def test_formats_agree_on_every_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not only cross_entropy: the whole metrics block and per-class table agree across a text,
    a columnar and a row-oriented format (1e-12), and per-class CE matches plain NumPy."""
    reports = []
    for name in ("preds.csv", "preds.parquet", "preds.arrow", "preds.jsonl"):
        WRITERS[name](tmp_path / name, DATA)
        reports.append(score_json(capsys, tmp_path / name))
    first = reports[0]
    for k, entry in enumerate(first["per_class"]):
        assert entry["class"] == CLASSES[k]
        assert entry["support"] == float((DATA.labels == k).sum())
        assert entry["cross_entropy"] == pytest.approx(numpy_class_ce(DATA, k), rel=RTOL)
    for other in reports[1:]:
        for key, value in first["metrics"].items():
            assert other["metrics"][key] == pytest.approx(value, rel=SAME), key
        for mine, theirs in zip(first["per_class"], other["per_class"], strict=True):
            for key, value in mine.items():
                if isinstance(value, float):
                    assert theirs[key] == pytest.approx(value, rel=SAME), key
                else:
                    assert theirs[key] == value


def test_directory_of_parquet_files_is_one_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    bounds = [0, 25, 61, N_ROWS]  # uneven parts
    for i in range(3):
        pq.write_table(DATA.rows(bounds[i], bounds[i + 1]).table(), dataset / f"part-{i}.parquet")
    report = score_json(capsys, dataset)
    assert_matches(report)
    assert len(report["inputs"]) == 3


def _hive_dataset(root: Path) -> dict[tuple[str | None, str], Data]:
    """DATA cut into region=…/day=… directories (region also the null partition, and a value
    that needs %-escaping), the part of each."""
    regions = ["eu", "us west", "__HIVE_DEFAULT_PARTITION__"]
    bounds = np.linspace(0, N_ROWS, 7).astype(int)
    parts = {}
    for i, (region, day) in enumerate((r, d) for r in regions for d in ("1", "2")):
        folder = root / f"region={region.replace(' ', '%20')}" / f"day={day}"
        folder.mkdir(parents=True)
        part = DATA.rows(bounds[i], bounds[i + 1])
        pq.write_table(part.table(), folder / "part-0.parquet")
        parts[(None if region.startswith("__") else region, day)] = part
    return parts


def test_hive_partitions_are_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """key=value directories of a dataset are text columns of its rows: --by region gives each
    region's metrics (scikit-learn on its rows); the null partition is the group null (JSON
    null, as a null cell is: not the text "null")."""
    parts = _hive_dataset(tmp_path / "ds")
    report = score_json(capsys, tmp_path / "ds", "--by", "region")
    assert_matches(report)
    groups = {g["by"]["region"]: g for g in report["groups"]}
    assert list(groups) == ["eu", "us west", None]  # text in order, then null
    for region, group in groups.items():
        rows = [parts[(region, day)] for day in ("1", "2")]
        data = Data(np.concatenate([r.labels for r in rows]), np.concatenate([r.probs for r in rows]))
        assert group["rows"] == len(data.labels)
        assert group["metrics"]["cross_entropy"] == pytest.approx(
            float(log_loss(data.labels, data.probs, labels=[0, 1, 2])), rel=RTOL)
    inspected = run_cli(capsys, "inspect", tmp_path / "ds")
    assert "partition key" in _role_line(inspected.out, "region")
    assert "partition key" in _role_line(inspected.out, "day")


def test_dataset_skips_staging_folders_and_partition_keys_are_no_predictions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Spark's _temporary and .spark-staging folders hold no committed data, and a partition key
    named like the prediction columns (p_run=1) is a partition key, not a probability column."""
    root = tmp_path / "ds"
    for folder in ("p_run=1", "_temporary/0/p_run=1", ".spark-staging/p_run=1"):
        (root / folder).mkdir(parents=True)
    pq.write_table(DATA.table(), root / "p_run=1" / "part-0.parquet")
    for junk in ("_temporary/0/p_run=1", ".spark-staging/p_run=1"):
        pq.write_table(DATA.rows(0, 5).table(), root / junk / "part-0.parquet")
    report = score_json(capsys, root)
    assert_matches(report)
    assert report["layout"]["pred_columns"] == list(PRED_COLUMNS)


def test_hive_partitions_must_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("region=eu", "day=1"):
        (tmp_path / "ds" / folder).mkdir(parents=True)
        pq.write_table(DATA.table(), tmp_path / "ds" / folder / "part.parquet")
    result = run_cli(capsys, "score", tmp_path / "ds")
    assert result.code == 3 and "different partition keys" in result.err


def test_several_files_are_one_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_text(first, DATA.rows(0, 37))
    write_text(second, DATA.rows(37, N_ROWS))
    report = score_json(capsys, first, second)
    assert_matches(report)
    assert report["inputs"] == [str(first), str(second)]


def test_several_files_of_different_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.parquet"
    write_text(first, DATA.rows(0, 50))
    pq.write_table(DATA.rows(50, N_ROWS).table(), second)
    assert_matches(score_json(capsys, first, second))


def test_several_files_with_columns_in_another_order(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Columns are read by name: a second file that holds the same columns in another order
    (as a pandas merge leaves them) is the same data."""
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(DATA.rows(0, 50).table(), first)
    table = DATA.rows(50, N_ROWS).table()
    pq.write_table(table.select(list(reversed(table.column_names))), second)
    assert_matches(score_json(capsys, first, second))


def _stdin_payload(kind: str) -> bytes:
    if kind == "csv":
        return DATA.text().encode("utf-8")
    if kind == "tsv":
        return DATA.text("\t").encode("utf-8")
    if kind == "tsv-comma":  # a comma in a column's name: still more tabs than commas
        lines = DATA.text("\t").splitlines()
        lines = [lines[0] + "\tnote, free text"] + [line + "\tn" for line in lines[1:]]
        return ("\n".join(lines) + "\n").encode("utf-8")
    if kind == "jsonl":
        return jsonl_text(DATA).encode("utf-8")
    if kind in ("csv.gz", "tsv.gz", "parquet.gz"):
        return gzip.compress(_stdin_payload(kind[:-3]))
    if kind == "csv.bz2":
        return bz2.compress(_stdin_payload("csv"))
    if kind == "csv.zst":
        return bytes(pa.compress(_stdin_payload("csv"), codec="zstd", asbytes=True))
    sink = io.BytesIO()
    table = DATA.table()
    if kind == "parquet":
        pq.write_table(table, sink, row_group_size=40)
    else:
        new_writer = pa.ipc.new_file if kind == "arrow-file" else pa.ipc.new_stream
        with new_writer(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=25)
    return sink.getvalue()


@pytest.mark.parametrize("kind", ["csv", "parquet", "arrow-file", "arrow-stream", "tsv", "tsv-comma", "jsonl",
                                  "csv.gz", "tsv.gz", "csv.bz2", "csv.zst", "parquet.gz"])
def test_stdin(kind: str) -> None:
    """Standard input is sniffed: Parquet and Arrow by their magic bytes, gzip, bzip2 and zstd by
    theirs (and decompressed), JSON Lines by its first '{', TSV by a first line of tabs without
    commas, else CSV."""
    payload = _stdin_payload(kind)
    result = run_proc("score", "-", "-f", "json", stdin=payload)
    assert result.code == 0, result.err
    report = load_json(result.out)
    assert_matches(report)
    assert result.err == ""


def test_input_format_overrides_the_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "predictions.txt"
    write_text(path, DATA)
    unknown = run_cli(capsys, "score", path, "-f", "json")
    assert unknown.code == 2, unknown.err  # cannot tell the format from .txt: a usage error
    assert "predictions.txt" in unknown.err
    assert_matches(score_json(capsys, path, "--input-format", "csv"))


@pytest.mark.parametrize("chunk_rows", [7, 1])
def test_one_huge_row_group_read_in_small_chunks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], chunk_rows: int
) -> None:
    path = tmp_path / "one_group.parquet"
    pq.write_table(DATA.table(), path, row_group_size=N_ROWS)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    whole = score_json(capsys, path)
    chunked = score_json(capsys, path, "--chunk-rows", chunk_rows)
    assert_matches(chunked)
    for key, value in whole["metrics"].items():
        assert chunked["metrics"][key] == pytest.approx(value, rel=SAME), key
    for mine, theirs in zip(whole["per_class"], chunked["per_class"], strict=True):
        assert theirs["cross_entropy"] == pytest.approx(mine["cross_entropy"], rel=SAME)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """DATA in four formats, written once for the property test below."""
    folder = tmp_path_factory.mktemp("chunks")
    paths = {name: folder / name for name in ("preds.csv", "preds.parquet", "preds.arrow", "preds.jsonl")}
    for name, path in paths.items():
        WRITERS[name](path, DATA)
    return paths


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk_rows=st.integers(min_value=1, max_value=N_ROWS + 5),
       name=st.sampled_from(["preds.csv", "preds.parquet", "preds.arrow", "preds.jsonl"]))
def test_numbers_do_not_depend_on_chunk_size(written: dict[str, Path], chunk_rows: int, name: str) -> None:
    report = score([str(written[name])], ScoreOptions(chunk_rows=chunk_rows)).to_dict()
    assert report["metrics"]["cross_entropy"] == pytest.approx(EXPECTED_CE, rel=RTOL)
    for k, entry in enumerate(report["per_class"]):
        assert entry["cross_entropy"] == pytest.approx(numpy_class_ce(DATA, k), rel=RTOL)


def test_csv_in_small_chunks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "preds.csv"
    write_text(path, DATA)
    assert_matches(score_json(capsys, path, "--chunk-rows", 7))


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_labels_that_look_missing_are_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    """SPEC 2: labels are read as written; NA, null and nan are class names, never missing."""
    names = ("NA", "null", "nan")
    probs = np.array([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    labels = [0, 1, 2, 0]
    path = tmp_path / f"na.{suffix}"
    columns = {"label": [names[k] for k in labels], **{f"p_{n}": probs[:, k] for k, n in enumerate(names)}}
    if suffix == "parquet":
        pq.write_table(pa.table(columns), path)
    elif suffix == "jsonl":
        records = [{c: (v[i] if isinstance(v[i], str) else float(v[i])) for c, v in columns.items()}
                   for i in range(len(labels))]
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        lines = [",".join(columns)] + [",".join([names[k], *map(repr, map(float, row))])
                                       for k, row in zip(labels, probs, strict=True)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = score_json(capsys, path)
    assert report["layout"]["classes"] == list(names)
    assert report["rows"]["scored"] == 4
    assert report["metrics"]["cross_entropy"] == pytest.approx(
        float(log_loss(labels, probs, labels=[0, 1, 2])), rel=RTOL)


# --------------------------------------------------------------------------------------------
# Files that do not belong together


def _mismatched_second(tmp_path: Path, variant: str) -> Path:
    path = tmp_path / "second.csv"
    part = DATA.rows(0, 20)
    if variant == "renamed":
        text = part.text().replace("p_bird", "p_fish", 1)
    elif variant == "missing":
        lines = [",".join(line.split(",")[:3]) for line in part.text().splitlines()]
        text = "\n".join(lines) + "\n"  # label,p_cat,p_dog only
    else:  # an extra class column
        lines = part.text().splitlines()
        text = "\n".join([lines[0] + ",p_fish", *(line + ",0.0" for line in lines[1:])]) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("variant", ["renamed", "missing", "extra"])
def test_files_with_different_columns_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], variant: str
) -> None:
    first = tmp_path / "first.csv"
    write_text(first, DATA)
    second = _mismatched_second(tmp_path, variant)
    result = run_cli(capsys, "score", first, second, "-f", "json")
    assert result.code == 3, result.err
    assert result.out == ""
    assert "first.csv" in result.err and "second.csv" in result.err
    assert "Traceback" not in result.err


# --------------------------------------------------------------------------------------------
# Report formats and -o


def _csv_value(text: str, scope: str, cls: str, metric: str) -> float:
    rows = list(csv.DictReader(io.StringIO(text)))
    found = [r for r in rows if (r["scope"], r["class"], r["metric"]) == (scope, cls, metric)]
    assert len(found) == 1, (scope, cls, metric)
    return float(found[0]["value"])


def test_csv_report_is_long_and_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "preds.csv"
    write_text(path, DATA)
    as_json = score_json(capsys, path)
    result = run_cli(capsys, "score", path, "--format", "csv")
    assert result.code == 0, result.err
    header = result.out.splitlines()[0]
    assert header == "scope,class,metric,value"
    ce = _csv_value(result.out, "overall", "", "cross_entropy")
    assert ce == as_json["metrics"]["cross_entropy"]  # the same float, not a rounded one
    assert ce == pytest.approx(EXPECTED_CE, rel=RTOL)
    for k, name in enumerate(CLASSES):
        value = _csv_value(result.out, "overall", name, "cross_entropy")
        assert value == pytest.approx(numpy_class_ce(DATA, k), rel=RTOL)
        assert _csv_value(result.out, "overall", name, "support") == float((DATA.labels == k).sum())


def test_csv_report_has_the_row_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scope rows: read, scored, skipped (and by reason), clipped, as in the JSON."""
    path = tmp_path / "preds.csv"
    lines = DATA.text().splitlines()
    lines[5] = "cow," + lines[5].split(",", 1)[1]  # an unknown label: skipped
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli(capsys, "score", path, "--format", "csv", "--on-invalid", "skip", "-q")
    assert result.code == 0, result.err
    assert _csv_value(result.out, "rows", "", "read") == N_ROWS
    assert _csv_value(result.out, "rows", "", "scored") == N_ROWS - 1
    assert _csv_value(result.out, "rows", "", "skipped") == 1
    assert _csv_value(result.out, "rows", "", "skipped:unknown_label") == 1
    assert _csv_value(result.out, "rows", "", "clipped") == 0


@pytest.mark.parametrize("fmt", ["json", "csv", "markdown"])
def test_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    path = tmp_path / "preds.csv"
    write_text(path, DATA)
    out = tmp_path / f"report.{fmt}"
    result = run_cli(capsys, "score", path, "-f", fmt, "-o", out)
    assert result.code == 0, result.err
    assert result.out == ""  # the report went to the file, not to stdout
    text = out.read_text(encoding="utf-8")
    if fmt == "json":
        assert load_json(text)["metrics"]["cross_entropy"] == pytest.approx(EXPECTED_CE, rel=RTOL)
    elif fmt == "csv":
        assert _csv_value(text, "overall", "", "cross_entropy") == pytest.approx(EXPECTED_CE, rel=RTOL)
    else:
        assert text.lstrip().startswith("#")
        assert f"{EXPECTED_CE:.4f}" in text
        assert re.search(r"^\|.*\|$", text, re.MULTILINE)  # a Markdown table
        for name in CLASSES:
            assert name in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".xent-")]  # no temporary left


# --------------------------------------------------------------------------------------------
# xent inspect


def _role_line(out: str, column: str) -> str:
    lines = [line for line in out.splitlines() if re.match(rf"\s*'?{re.escape(column)}'?\s", line)]
    assert len(lines) == 1, (column, out)
    return lines[0]


def _inspect_table(data: Data) -> pa.Table:
    notes = pa.array([f"note {i}" for i in range(len(data.labels))], pa.string())
    return data.table().append_column("note", notes)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    data = make_data(1234, seed=7)
    path = tmp_path / f"preds.{kind}"
    if kind == "csv":
        lines = [line + f",note {i - 1}" if i else line + ",note"
                 for i, line in enumerate(data.text().splitlines())]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        pq.write_table(_inspect_table(data), path, row_group_size=500)
    result = run_cli(capsys, "inspect", path)
    assert result.code == 0, result.err
    out = result.out
    assert re.search(rf"^\s*format\s+{kind}\b", out, re.MULTILINE), out
    assert "label" in _role_line(out, "label").split()[1:]
    for name in PRED_COLUMNS:
        assert "prediction" in _role_line(out, name)
    assert "ignored" in _role_line(out, "note")
    classes_line = next(line for line in out.splitlines() if line.strip().startswith("classes"))
    assert all(name in classes_line for name in CLASSES)
    rows_line = next(line for line in out.splitlines() if line.strip().startswith("rows"))
    if kind == "parquet":  # known from the footer without reading data
        assert re.search(r"\b1,?234\b", rows_line), rows_line


def test_inspect_directory_counts_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory is one dataset: inspect's row count is that of all its files."""
    data = make_data(1000, seed=8)
    table = data.table()
    (tmp_path / "ds").mkdir()
    for i, (start, stop) in enumerate([(0, 350), (350, 800), (800, 1000)]):
        pq.write_table(table.slice(start, stop - start), tmp_path / "ds" / f"part-{i}.parquet")
    result = run_cli(capsys, "inspect", tmp_path / "ds")
    assert result.code == 0, result.err
    rows_line = next(line for line in result.out.splitlines() if line.strip().startswith("rows"))
    assert re.search(r"\b1,000\b", rows_line), rows_line
    assert "3 files" in result.out


# --------------------------------------------------------------------------------------------
# A large CSV is parsed as byte ranges on two threads


def test_csv_split_in_ranges_matches_oracles(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV above 2 x CSV_RANGE_BYTES is cut at line ends into ranges parsed two at a time and
    put back in file order. With 2 KiB ranges, 4,000 rows make ~100 ranges: every row, id text,
    group and label must come through, and rows keep their numbers. Oracles: scikit-learn's
    ``log_loss`` overall and per group (rtol 1e-9), the 5 worst rows found with NumPy from the
    written probabilities."""
    from xentcli.io import readers

    monkeypatch.setattr(readers, "CSV_RANGE_BYTES", 2048)
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)  # types are inferred from the first 4 KiB
    reads = []
    range_view = readers._range_view
    monkeypatch.setattr(readers, "_range_view", lambda *a: reads.append(a) or range_view(*a))
    rng = np.random.default_rng(7)
    n = 4000
    probs = softmax(rng.normal(size=(n, 3)) * 2, axis=1)
    labels = rng.integers(0, 3, n)
    groups = rng.integers(0, 4, n)
    ids = [f"id-{i:05d}-é" for i in range(n)]
    lines = ["id,g,label," + ",".join(PRED_COLUMNS)] + [
        f"{ids[i]},grp{groups[i]},{CLASSES[labels[i]]}," + ",".join(repr(float(p)) for p in probs[i])
        for i in range(n)]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli(capsys, "score", path, "--id", "id", "--by", "g", "--worst", "5", "-f", "json")
    assert result.code == 0, result.err
    assert len(reads) > 50  # the split path ran
    report = load_json(result.out)
    assert report["rows"]["scored"] == n
    assert report["metrics"]["cross_entropy"] == pytest.approx(log_loss(labels, probs), rel=RTOL)
    for group in report["groups"]:
        g = int(group["by"]["g"].removeprefix("grp"))
        mine = groups == g
        expected = log_loss(labels[mine], probs[mine], labels=[0, 1, 2])
        assert group["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)
    losses = -np.log(probs[np.arange(n), labels])
    worst = np.argsort(-losses, kind="stable")[:5]
    assert [w["id"] for w in report["worst"]] == [ids[i] for i in worst]
    assert [w["row"] for w in report["worst"]] == [int(i) + 1 for i in worst]
    assert [w["label"] for w in report["worst"]] == [CLASSES[labels[i]] for i in worst]



@pytest.mark.parametrize("head", ["clean", "groups", "integers", "numeric labels", "ragged", "ids"])
def test_csv_first_block_is_parsed_once_when_its_types_are_the_passes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: str) -> None:
    """The rows of a large CSV's first block, parsed to infer its types, are scored as they were
    parsed when those are the types the pass reads them as (labels and groups as dictionaries);
    otherwise (a prediction column whose first block holds only integers, labels that read as
    numbers, a ragged row, counted once, an --id column, which the pass reads as plain text) the
    pass parses the block again. Oracles: scikit-learn's ``log_loss`` (rtol 1e-9) over the rows
    as written, and per group; where the pass began, from the ranges it parsed."""
    from xentcli.io import readers

    monkeypatch.setattr(readers, "CSV_RANGE_BYTES", 2048)
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)
    starts = []
    range_view = readers._range_view
    monkeypatch.setattr(readers, "_range_view",
                        lambda m, piece: starts.append(piece[0]) or range_view(m, piece))
    rng = np.random.default_rng(3)
    n = 1500
    probs = softmax(rng.normal(size=(n, 3)) * 2, axis=1)
    labels = rng.integers(0, 3, n)
    names = ["10", "20", "30"] if head == "numeric labels" else list(CLASSES)
    first = 500  # > the rows of the first 4 KiB, when they are written as integers
    if head == "integers":
        probs[:first] = np.eye(3)[labels[:first]]
    cells = [[repr(float(p)) for p in row] for row in probs]
    if head == "integers":
        cells[:first] = [[str(int(p)) for p in row] for row in probs[:first]]
    groups = rng.integers(0, 3, n)
    g = [f"g{groups[i]}" if head == "groups" else f"row{i}" for i in range(n)]
    lines = ["g,label," + ",".join(f"p_{name}" for name in names)] + [
        f"{g[i]},{names[labels[i]]}," + ",".join(cells[i]) for i in range(n)]
    if head == "ragged":
        lines.insert(10, f"row,{names[0]},0.5,0.5")
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    by = ("g",) if head == "groups" else ()
    layout = LayoutRequest(by=by, id="g" if head == "ids" else None)
    report = score([str(path)], ScoreOptions(on_invalid="skip", layout=layout))
    assert report.classes == names
    assert report.rows.read == n + (head == "ragged")
    assert report.rows.skipped_by_reason == ({"ragged_row": 1} if head == "ragged" else {})
    clipped = np.maximum(probs, np.finfo(np.float64).eps)
    assert report.scores.cross_entropy == pytest.approx(log_loss(labels, clipped, labels=[0, 1, 2]), rel=RTOL)
    for group in report.groups:
        mine = groups == int(group.by["g"].removeprefix("g"))
        assert group.scores.cross_entropy == pytest.approx(
            log_loss(labels[mine], clipped[mine], labels=[0, 1, 2]), rel=RTOL)
    assert len(report.groups) == (3 if head == "groups" else 0)
    data = path.read_bytes()
    reused = head in ("clean", "groups")
    assert min(starts) == (data.rfind(b"\n", 0, 4096) + 1 if reused else data.index(b"\n") + 1)


def test_csv_ranges_parse_in_large_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each range of a split CSV arrives as about two batches, not as pyarrow's default 1 MiB
    blocks (~9k rows here, each a block for the scoring thread with its fixed overhead). With
    4 MiB ranges and a 9 MiB file: 3 ranges, at most 3 batches each, every row once."""
    from xentcli.io import readers
    from xentcli.io.sources import Source

    monkeypatch.setattr(readers, "CSV_RANGE_BYTES", 4 << 20)
    row = "cat,0.123456789012,0.234567890123,0.641975320865\n"
    n = (9 << 20) // len(row)
    path = tmp_path / "big.csv"
    path.write_text("label," + ",".join(PRED_COLUMNS) + "\n" + row * n)
    types = {"label": pa.string(), **{c: pa.float64() for c in PRED_COLUMNS}}
    source = Source(str(path), path.name, "csv")
    batches = list(readers.iter_batches(source, ["label", *PRED_COLUMNS], types, 1 << 20,
                                        readers.RaggedRows()))
    assert sum(b.num_rows for b in batches) == n
    assert len(batches) <= 9, [b.num_rows for b in batches]


@given(lines=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), min_size=1,
                      max_size=30),
       last_newline=st.booleans(), size=st.integers(min_value=1, max_value=40))
@settings(max_examples=150, deadline=None)
def test_csv_line_ranges_cover_the_file_once_and_end_at_line_ends(
        lines: list[bytes], last_newline: bool, size: int) -> None:
    """The byte ranges of a split CSV follow each other from the start offset to the end of the
    file, each ends just after a newline (the last one may end at the end of the file instead)
    and is at least ``size`` bytes unless it is the last. Oracle: the file's bytes themselves."""
    import mmap
    import tempfile

    from xentcli.io import readers

    data = b"\n".join(lines) + (b"\n" if last_newline else b"")
    if not data:
        return  # an empty file cannot be mapped, and is never split (see _splittable)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        pieces = list(readers._line_ranges(mapped, 0, size))
        mapped.close()
    assert [p[0] for p in pieces] == [0] + [a + n for a, n in pieces[:-1]]
    assert pieces[-1][0] + pieces[-1][1] == len(data)
    for start, length in pieces[:-1]:
        assert data[start + length - 1 : start + length] == b"\n" and length >= size


def test_a_large_csv_that_cannot_be_mapped_is_read_serially(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system that cannot map files (mmap fails with ENODEV), a CSV too large for one
    range is read by pyarrow's streaming reader instead of being refused. Oracle: scikit-learn's
    ``log_loss`` (rtol 1e-9); the ranges' reader must not have run."""
    import errno
    import mmap

    from xentcli.io import readers

    def no_mmap(*args: Any, **kwargs: Any) -> mmap.mmap:
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(readers, "CSV_RANGE_BYTES", 2048)
    monkeypatch.setattr(readers.mmap, "mmap", no_mmap)
    monkeypatch.setattr(readers, "_range_view", lambda *a: pytest.fail("the ranges' reader ran"))
    rng = np.random.default_rng(11)
    probs = softmax(rng.normal(size=(600, 3)), axis=1)
    labels = rng.integers(0, 3, 600)
    lines = ["label," + ",".join(PRED_COLUMNS)] + [
        CLASSES[y] + "," + ",".join(repr(float(p)) for p in row)
        for y, row in zip(labels, probs, strict=True)]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 2 * readers.CSV_RANGE_BYTES
    report = score([str(path)])
    assert report.scores.cross_entropy == pytest.approx(log_loss(labels, probs, labels=[0, 1, 2]),
                                                        rel=RTOL)


def test_a_parsed_csv_range_leaves_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """After its parse, a range's pages are given back (MADV_DONTNEED) from the page holding its
    first byte to its last byte, so a large CSV does not end up resident as a whole. Oracle: the
    calls a stand-in for the mapping records."""
    import mmap

    from xentcli.io import readers

    calls = []

    class Mapped:
        def madvise(self, option: int, start: int, length: int) -> None:
            calls.append((option, start, length))

    page = mmap.PAGESIZE
    readers._release_range(Mapped(), (3 * page + 10, 5 * page))  # type: ignore[arg-type]
    assert calls == [(mmap.MADV_DONTNEED, 3 * page, 5 * page + 10)]


@pytest.mark.parametrize(("name", "threaded"), [("small.csv", False), ("small.csv.gz", False),
                                                ("small.parquet", True)])
def test_pyarrows_streaming_csv_reader_stays_on_the_callers_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, threaded: bool) -> None:
    """A small or compressed CSV is iterated on the thread that called score(), not on xent's
    reader thread: from there pyarrow's streaming CSV reader made the interpreter abort at exit
    ("terminate called without an active exception") in ~2% of the runs of a script that scored
    a small CSV, up to ~20% in a tighter loop. Other formats keep the reader thread."""
    import pyarrow.csv as pacsv

    from xentcli import stream

    calls = []
    read_ahead = stream._read_ahead
    monkeypatch.setattr(stream, "_read_ahead", lambda items: calls.append(1) or read_ahead(items))
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    table = pa.table({"label": ["cat", "bird"], **{c: probs[:, k] for k, c in enumerate(PRED_COLUMNS)}})
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        text = io.BytesIO()
        pacsv.write_csv(table, text)
        path.write_bytes(gzip.compress(text.getvalue()) if name.endswith(".gz") else text.getvalue())
    report = score([str(path)])
    assert report.scores.cross_entropy == pytest.approx(log_loss([0, 2], probs, labels=[0, 1, 2]), rel=RTOL)
    assert bool(calls) == threaded


@pytest.mark.parametrize(("kind", "absent"), [("csv", "pyarrow.parquet"), ("parquet", "pyarrow.csv"),
                                            ("parquet", "pyarrow.parquet"), ("parquet", "pyarrow.fs")])
def test_a_format_imports_only_its_own_reader(tmp_path: Path, kind: str, absent: str) -> None:
    """Scoring a CSV does not import pyarrow.parquet (with pyarrow.fs, its cloud filesystems and
    ssl: ~9 ms of every run's start), nor scoring Parquet pyarrow.csv; and Parquet is read
    without pyarrow.parquet either (see ``readers.ParquetReader``)."""
    import subprocess
    import sys

    import pyarrow.csv as pacsv
    from helpers import clean_env

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    columns = {"label": ["cat", "bird"], **{c: probs[:, k] for k, c in enumerate(PRED_COLUMNS)}}
    path = tmp_path / f"small.{kind}"
    if kind == "csv":
        pacsv.write_csv(pa.table(columns), path)
    else:
        pq.write_table(pa.table(columns), path)
    code = (f"import sys; from xentcli import score; score([{str(path)!r}]); "
            f"print({absent!r} in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def _parquet_cases(tmp_path: Path) -> list[tuple[Path, list[str], list[str]]]:
    """(file, columns to read, text columns read as dictionaries): flat float32 columns in several
    row groups, a weight and a group column, a list column, a fixed-size list, a struct whose
    leaves are not read, and names with a dot, in an order other than the file's."""
    rng = np.random.default_rng(5)
    probs = softmax(rng.normal(size=(300, 3)), axis=1)
    labels = [CLASSES[k] for k in rng.integers(0, 3, 300)]
    wide = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"label": labels, **{c: probs[:, k].astype(np.float32)
                                                for k, c in enumerate(PRED_COLUMNS)},
                             "w": rng.random(300), "region": rng.choice(["eu", "us"], 300)}),
                   wide, row_group_size=70)
    listed = tmp_path / "listed.parquet"
    pq.write_table(pa.table({"meta": pa.array([{"a": 1, "b": "x"}] * 300),
                             "probs": pa.array(probs.tolist(), pa.list_(pa.float64())),
                             "fixed": pa.array(probs.tolist(), pa.list_(pa.float64(), 3)),
                             "y.true": labels}), listed, row_group_size=128)
    return [(wide, ["label", *PRED_COLUMNS], ["label"]),
            (wide, ["region", "w", PRED_COLUMNS[2], "label", PRED_COLUMNS[0], PRED_COLUMNS[1]], []),
            (listed, ["y.true", "probs"], ["y.true"]),
            (listed, ["fixed", "y.true"], [])]


def test_parquet_is_read_as_pyarrow_parquet_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     ) -> None:
    """xent reads Parquet through pyarrow's Cython reader (``readers.ParquetReader``), not
    ``pyarrow.parquet.ParquetFile``. Oracle: ParquetFile itself, the public reader that wraps the
    same Cython class: the same schema, row count and batches, value for value, flat and nested
    columns alike; and where the Cython reader is missing, xent falls back to ParquetFile."""
    from xentcli.io import readers

    for path, columns, dictionary in _parquet_cases(tmp_path):
        ours = readers.open_parquet(str(path), dictionary or None)
        assert isinstance(ours, readers.ParquetReader), "pyarrow's Cython reader was not used"
        public = pq.ParquetFile(path, read_dictionary=dictionary or None)
        assert ours.schema_arrow.equals(public.schema_arrow)
        assert ours.metadata.num_rows == public.metadata.num_rows == 300
        got = pa.Table.from_batches(list(ours.iter_batches(64, columns, False)))
        want = pa.Table.from_batches(list(public.iter_batches(64, columns=columns, use_threads=False)))
        assert got.column_names == want.column_names
        assert got.equals(want)
        assert set(got.column_names) == set(columns)

    def missing(*args: Any, **kwargs: Any) -> None:
        raise ImportError("cannot import name 'ParquetReader' from 'pyarrow._parquet'")

    monkeypatch.setattr(readers.ParquetReader, "__init__", missing)
    path = tmp_path / "preds.parquet"
    WRITERS["preds.parquet"](path, DATA)
    assert isinstance(readers.open_parquet(str(path), ["label"]), pq.ParquetFile)
    assert score([str(path)]).scores.cross_entropy == pytest.approx(EXPECTED_CE, rel=RTOL)


CELL_KINDS = {
    "int": lambda rng: str(int(rng.integers(-99, 99))),
    "float": lambda rng: repr(float(rng.random())),
    "bool": lambda rng: "true" if rng.random() < 0.5 else "false",
    "empty": lambda rng: "",
    "date": lambda rng: f"2026-01-{int(rng.integers(1, 29)):02d}",
    "text": lambda rng: f"t{int(rng.integers(0, 9))}",
}


@given(st.lists(st.tuples(st.sampled_from(sorted(CELL_KINDS)), st.sampled_from(sorted(CELL_KINDS)),
                          st.floats(0, 1.2)), min_size=1, max_size=6),
       st.integers(0, 2**32 - 1), st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_csv_types_inferred_from_two_halves_are_the_whole_blocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, columns: list[tuple[str, str, float]],
        seed: int, tab: bool) -> None:
    """A large CSV's column types are inferred from the two halves of its first block at once.
    Oracle: pyarrow's own inference over the whole first block (``open_csv`` with that block
    size), for columns whose cells change kind at a random point: in the first half, the second,
    or after the block (which must not count)."""
    import pyarrow.csv as pacsv

    from xentcli.io import readers
    from xentcli.io.sources import Source

    rng = np.random.default_rng(seed)
    sep = "\t" if tab else ","
    n = 900  # the first block is a third of the file: some changes fall after it
    rows = [sep.join(CELL_KINDS[before if i < at * n / 3 else after](rng)
                     for before, after, at in columns) for i in range(n)]
    path = tmp_path / ("f.tsv" if tab else "f.csv")
    path.write_text(sep.join(f"c{j}" for j in range(len(columns))) + "\n" + "\n".join(rows) + "\n")
    block = path.stat().st_size // 3
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", block)
    monkeypatch.setattr(readers, "CSV_RANGE_BYTES", block // 2)
    source = Source(str(path), path.name, "tsv" if tab else "csv")
    expected = pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=sep),
        convert_options=pacsv.ConvertOptions(null_values=[""], strings_can_be_null=False,
                                             quoted_strings_can_be_null=False)).schema
    assert readers.read_schema(source) == expected
    if all(before == after for before, after, _ in columns) and rows[0]:  # (not blank lines)
        assert readers._schema_of_halves(source) == expected  # the two-thread path ran


_BODY = b"".join(b"%d,%d\n" % (i, i) for i in range(20))
_CRLF_ODD = b"a,b\r\n" + b"".join(b"%d,%d\r\n" % (i, i) for i in range(20)) + b"x,1\r\n" + _BODY
_CR_ODD = b"a,b\n" + _BODY + b"x,1\r" + _BODY


@pytest.mark.parametrize(("data", "block"), [
    pytest.param(_CRLF_ODD, _CRLF_ODD.index(b"x,1\r\n") + 4, id="CRLF, the block ends between CR and LF"),
    pytest.param(_CR_ODD, _CR_ODD.index(b"x,1\r") + 4, id="a lone CR ends the block"),
    pytest.param(b"a,b\n" + _BODY + b"x,1", 1 << 20, id="no newline at the end, block beyond the file"),
    pytest.param(b"c0,c1\n" + b"\n" * 100 + b"1,2\n" * 5, 60, id="first block of blank lines"),
    pytest.param(b"c0,c1\n" + b"1,2,3\n" * 30 + b"1,2\n" * 5, 100, id="first block of ragged rows"),
    pytest.param(b"\na,b\n" + _BODY, 1 << 20, id="a blank line before the header"),
    pytest.param(b"\xef\xbb\xbfa,b\n" + _BODY, 1 << 20, id="UTF-8 BOM"),
    pytest.param(b'"a,1","b"\n' + _BODY, 1 << 20, id="quoted names"),
])
def test_csv_types_from_halves_at_the_block_edges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   data: bytes, block: int) -> None:
    """The first block's edges as pyarrow draws them, where the two halves could see other rows
    than the whole block: the odd value on the block's last line decides a column's type (a
    line ended by CR, or by the end of the file), a first block without rows (pyarrow infers
    from the next one), a header not on the first line. Oracle: pyarrow's inference over the
    whole first block. (Found by review: the first three gave int64 for a text column, the
    next two null for ints.)"""
    import pyarrow.csv as pacsv

    from xentcli.io import readers
    from xentcli.io.sources import Source

    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", block)
    monkeypatch.setattr(readers, "CSV_RANGE_BYTES", 1)  # every file takes the split path
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    expected = pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
        convert_options=pacsv.ConvertOptions(null_values=[""], strings_can_be_null=False,
                                             quoted_strings_can_be_null=False)).schema
    assert readers.read_schema(Source(str(path), path.name, "csv")) == expected


@pytest.mark.parametrize("data", [
    pytest.param(b"a,b\n1,2\n", id="LF"),
    pytest.param(b"a,b\r\n1,2\r\n", id="CRLF"),
    pytest.param(b"a,b\r1,2\r", id="lone CR"),
    pytest.param(b"abc\r\n1\r\n", id="CRLF split between two reads"),
    pytest.param(b"abcd\r1\r", id="lone CR ending a read"),
    pytest.param(b"ab\rc\n1\n", id="a CR before the first LF"),
    pytest.param(b"a,b", id="no line end"),
    pytest.param(b"a,b\r", id="CR at the end of the file"),
    pytest.param(b"", id="empty"),
])
def test_csv_header_line_ends_where_pyarrow_ends_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        data: bytes) -> None:
    """The header line ends at \\n, \\r\\n or a lone \\r, also when the line end falls across
    two reads (4 bytes at a time here). Oracle: Python's ``bytes.splitlines``, which splits bytes
    at the same three line ends."""
    from xentcli.io import readers
    from xentcli.io.sources import Source

    monkeypatch.setattr(readers, "HEADER_READ_BYTES", 4)
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    expected = data.splitlines(keepends=True)[0] if data else b""
    assert readers._header_line(Source(str(path), path.name, "csv")) == expected


def test_a_large_csv_with_lone_cr_line_ends_is_read_whole(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A large CSV whose lines end in a lone \\r (classic Mac OS) cannot be cut into ranges at
    \\n: pyarrow's streaming reader reads it, in blocks of CSV_BLOCK_BYTES. Its header used to be
    looked for up to the first \\n, that is through the whole file, growing one bytes object read
    by read (a 38 MiB file took 8 s), and the file then read as holding no rows. Oracles:
    scikit-learn's ``log_loss`` (rtol 1e-9); the bytes the header search looked at, at most
    twice the file's."""
    from xentcli.io import readers
    from xentcli.io.sources import Source

    monkeypatch.setattr(readers, "CSV_RANGE_BYTES", 2048)
    monkeypatch.setattr(readers, "HEADER_READ_BYTES", 256)
    monkeypatch.setattr(readers, "_range_view", lambda *a: pytest.fail("the ranges' reader ran"))
    searched = []
    line_end = readers._line_end
    monkeypatch.setattr(readers, "_line_end",
                        lambda data, start: searched.append(len(data) - start) or line_end(data, start))
    data = make_data(800, seed=9)
    path = tmp_path / "mac.csv"
    path.write_bytes(data.text().replace("\n", "\r").encode())
    assert path.stat().st_size > 2 * readers.CSV_RANGE_BYTES
    report = score([str(path)])
    assert report.rows.read == 800
    assert report.scores.cross_entropy == pytest.approx(sklearn_ce(data), rel=RTOL)
    no_line_end = tmp_path / "one_line.csv"
    no_line_end.write_bytes(b"x" * 100_000)
    searched.clear()
    assert len(readers._header_line(Source(str(no_line_end), no_line_end.name, "csv"))) == 100_000
    assert sum(searched) <= 2 * 100_000


@pytest.mark.parametrize("kind", ["large", "large, a ragged row", "compressed"])
def test_quoted_values_that_span_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """A text column whose quoted values hold line ends. A large CSV's ranges, cut at line ends,
    may cut such a value: both halves of its row then have the wrong number of fields, which a
    serial parse does not find, and the file is read again serially (it was an internal error,
    IndexError; a range that did not parse was "parser got out of sync"). pyarrow's streaming
    reader cuts its own blocks between rows (``newlines_in_values``). A real ragged row is still
    reported at its row and line. Oracles: scikit-learn's ``log_loss`` (rtol 1e-9); the line,
    counted by hand."""
    from xentcli.io import readers

    monkeypatch.setattr(readers, "CSV_RANGE_BYTES", 2048)
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)
    serial = []
    iter_batches = readers.iter_batches
    monkeypatch.setattr(readers, "iter_batches",
                        lambda *a, **k: serial.append(k.get("serially")) or iter_batches(*a, **k))
    rng = np.random.default_rng(4)
    n = 600
    probs = softmax(rng.normal(size=(n, 3)), axis=1)
    labels = rng.integers(0, 3, n)
    lines = ["note,label," + ",".join(PRED_COLUMNS)] + [
        f'"row {i}\nsaid ""{i}"", more",{CLASSES[labels[i]]},' + ",".join(repr(float(p)) for p in probs[i])
        for i in range(n)]
    if kind == "large, a ragged row":
        lines.insert(301, '"row 300\nof four",cat,0.5,0.5')  # data row 301, from line 602
    text = "\n".join(lines) + "\n"
    if kind == "compressed":
        path = tmp_path / "notes.csv.gz"
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path = tmp_path / "notes.csv"
        path.write_text(text)
        assert path.stat().st_size > 2 * readers.CSV_RANGE_BYTES
    if kind == "large, a ragged row":
        result = run_cli(capsys, "score", path)
        assert result.code == 3, result.err
        assert "row 301 (line 602)" in result.err_lines()[0], result.err
        result = run_cli(capsys, "score", path, "--on-invalid", "skip", "-f", "json")
        assert result.report["rows"]["skipped_by_reason"] == {"ragged_row": 1}
    else:
        result = run_cli(capsys, "score", path, "-f", "json")
    assert result.code == 0, result.err
    assert result.report["rows"]["scored"] == n
    expected = log_loss(labels, probs, labels=[0, 1, 2])
    assert result.report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)
    assert (True in serial) == (kind != "compressed")  # the large file was read again serially


def test_csv_header_longer_than_a_block(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A header line longer than the block the column types are inferred from, and longer than
    the piece the parallel reader reads while looking for its end (very wide files), in a large
    file and in a small compressed one: the block grows to hold it, the reader reads on, and
    every row comes through (they were "the file is empty" and "no data rows"). Oracle:
    scikit-learn's log_loss."""
    from xentcli.io import readers

    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 64)
    monkeypatch.setattr(readers, "HEADER_READ_BYTES", 16)
    monkeypatch.setattr(readers, "CSV_RANGE_BYTES", 2048)
    names = [f"classname{i:02d}" for i in range(12)]  # a 186-byte header
    rng = np.random.default_rng(11)
    probs = softmax(rng.normal(size=(400, len(names))), axis=1)
    labels = rng.integers(0, len(names), 400)
    lines = ["label," + ",".join(f"p_{n}" for n in names)] + [
        f"{names[y]}," + ",".join(repr(float(p)) for p in row) for y, row in zip(labels, probs, strict=True)]
    path = tmp_path / "wide.csv"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 2 * readers.CSV_RANGE_BYTES  # the parallel path
    result = run_cli(capsys, "score", path, "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    assert report["rows"]["scored"] == 400
    assert report["layout"]["classes"] == names
    expected = log_loss(labels, probs, labels=list(range(len(names))))
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)
    small = tmp_path / "wide_small.csv.gz"  # read by the streaming reader, compressed
    small.write_bytes(gzip.compress(("\n".join(lines[:6]) + "\n").encode()))
    result = run_cli(capsys, "score", small, "-f", "json")
    assert result.code == 0, result.err
    expected = log_loss(labels[:5], probs[:5], labels=list(range(len(names))))
    assert load_json(result.out)["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("kind", ["file", "stream", "lz4"])
def test_arrow_file_pages_are_let_go_as_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  kind: str) -> None:
    """An Arrow file is read from a memory map, its columns views into it: the pages of batches
    read long ago are let go (peak RSS was the file's size plus ~40 MB: 433 MiB for 8M rows), also
    with a dictionary-encoded label column, whose values are stored once before the batches; a
    compressed file's whole map now and then. Oracle: the writer's offsets after each batch (all
    but the last IPC_BATCHES_KEPT batches let go, none of those) and scikit-learn's log loss."""
    from xentcli.io import readers

    rng = np.random.default_rng(2)
    n, per_batch = 6000, 200
    probs = rng.dirichlet(np.ones(3), n)
    labels = rng.integers(0, 3, n)
    table = pa.table({"label": pa.array(np.array(["a", "b", "c"])[labels]).dictionary_encode(),
                      **{f"p_{c}": probs[:, k] for k, c in enumerate("abc")}})
    path = tmp_path / "many.arrow"
    ends = []
    with pa.OSFile(str(path), "wb") as sink:
        options = pa.ipc.IpcWriteOptions(compression="lz4" if kind == "lz4" else None)
        new = pa.ipc.new_stream if kind == "stream" else pa.ipc.new_file
        with new(sink, table.schema, options=options) as out:
            for batch in table.to_batches(max_chunksize=per_batch):
                out.write_batch(batch)
                ends.append(sink.tell())
    released: list[tuple[int, int]] = []
    real = readers._release_range

    def release(mapped: Any, piece: tuple[int, int]) -> None:
        released.append(piece)
        real(mapped, piece)

    monkeypatch.setattr(readers, "_release_range", release)
    monkeypatch.setattr(readers, "IPC_RELEASE_BYTES", 0)
    monkeypatch.setattr(readers, "IPC_COMPRESSED_RELEASE_EVERY", 4)
    report = score([str(path)], ScoreOptions(chunk_rows=per_batch))
    assert report.scores.cross_entropy == pytest.approx(log_loss(labels, probs), rel=1e-9)
    if kind == "lz4":
        assert released and all(piece == (0, path.stat().st_size) for piece in released)
        return
    let_go = max(start + length for start, length in released)
    kept = readers.IPC_BATCHES_KEPT
    assert ends[-kept - 1] <= let_go < ends[-kept + 1]  # up to the start of the batch kept last
    assert all(a + b == c for (a, b), (c, _) in itertools.pairwise(released))  # each range once


def test_dataset_folders_that_are_links_are_read_and_unreadable_ones_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition folder that is a symlink was skipped (os.walk does not follow links), and one
    that cannot be listed was skipped too, both with exit 0 and rows missing. A link is now
    followed (two links to one folder: its rows twice; a link back up the tree: not followed), and
    an unreadable folder is an error (exit 3). Oracle: scikit-learn on all the rows."""
    import os

    parts = _hive_dataset(tmp_path / "elsewhere")
    (tmp_path / "ds").mkdir()
    os.symlink(tmp_path / "elsewhere" / "region=eu", tmp_path / "ds" / "region=eu")
    os.symlink(tmp_path / "elsewhere" / "region=eu", tmp_path / "ds" / "region=again")
    os.symlink(tmp_path / "ds", tmp_path / "ds" / "region=loop")  # a cycle: its files are seen once
    report = score_json(capsys, str(tmp_path / "ds") + "/")
    eu = [parts[("eu", day)] for day in ("1", "2")] * 2
    labels = np.concatenate([p.labels for p in eu])
    assert report["rows"]["read"] == len(labels)
    assert report["metrics"]["cross_entropy"] == pytest.approx(
        float(log_loss(labels, np.concatenate([p.probs for p in eu]), labels=[0, 1, 2])), rel=RTOL)

    real_scandir = os.scandir
    locked = str(tmp_path / "elsewhere" / "region=us%20west")

    def scandir(path: Any = ".") -> Any:
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = run_cli(capsys, "score", tmp_path / "elsewhere")
    assert result.code == 3
    assert f"{locked}: cannot read this folder of the dataset (Permission denied)" in result.err


@pytest.mark.parametrize("late", ["a float after ints", "a key no role reads", "an unused key null at first"])
def test_json_lines_types_are_the_files_not_the_first_blocks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        late: str) -> None:
    """pyarrow infers a JSON Lines column's type from its first block: probabilities written 1 and
    0 there and 0.25 later ("Failed to convert JSON to int64"), a key first seen later ("unexpected
    field"), or an unused key null at first and a number later ended the read (exit 3). Oracle:
    scikit-learn on the rows as written."""
    from xentcli.io import readers

    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1024)  # many blocks in a small file
    rows = []
    for i in range(300):
        early = i < 200
        if late == "a float after ints":
            rows.append({"label": "a", "p_a": 1, "p_b": 0} if early
                        else {"label": "b", "p_a": 0.25, "p_b": 0.75})
        elif late == "a key no role reads":
            rows.append({"label": "ab"[i % 2], "p_a": 0.6, "p_b": 0.4, **({} if early else {"note": "x"})})
        else:
            rows.append({"label": "ab"[i % 2], "p_a": 0.6, "p_b": 0.4, "extra": None if early else 1.5})
    path = tmp_path / "late.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = [0 if r["label"] == "a" else 1 for r in rows]
    probs = [[r["p_a"], r["p_b"]] for r in rows]
    report = score_json(capsys, path, "--pred", "p_a,p_b")
    assert report["rows"]["scored"] == 300
    expected = log_loss(labels, probs, labels=[0, 1])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


def test_json_lines_list_column_of_ints_then_floats(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A list column of probabilities written [1, 0] in the first block and [0.25, 0.75] later
    ended the read ("Failed to convert JSON to int64"). Oracle: scikit-learn."""
    from xentcli.io import readers

    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1024)
    rows = [{"label": "a", "probs": [1, 0]}] * 200 + [{"label": "b", "probs": [0.25, 0.75]}] * 100
    path = tmp_path / "lists.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = score_json(capsys, path, "--classes", "a,b")
    expected = log_loss([0] * 200 + [1] * 100, [[1.0, 0.0]] * 200 + [[0.25, 0.75]] * 100)
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)
