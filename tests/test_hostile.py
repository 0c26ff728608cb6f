"""Hostile input and faults, end to end (SPEC sections 2, 3 and 6).

A CI gate that crashes, hangs or silently drops rows is worse than none. Each test here builds
the bad input itself and checks that the run ends as the SPEC says: exit 3 with one located
message on stderr (file, and where it applies row, column, value, what was expected, a hint),
nothing on stdout, no traceback, user text escaped; or exit 0 with every row accounted for in
``rows``. ``tests/test_bad_input.py`` covers the basic bad cells; this file covers encodings,
schemas, damaged containers, size extremes, hostile names, chunk boundaries and process faults
(closed pipes, Ctrl-C, internal errors)."""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import json
import math
import random
import re
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from helpers import (
    Result,
    check_location,
    clean_env,
    load_json,
    run_main,
    run_proc,
    write_csv,
    write_parquet,
    xent_command,
)
from sklearn.metrics import log_loss

import xentcli.stream

RTOL = 1e-9  # against scikit-learn / NumPy on the good rows
EPS = float(np.finfo(np.float64).eps)
MAX_MESSAGE_LINES = 10
MAX_MESSAGE_CHARS = 2000  # a 10 MB cell must not come back as a 10 MB message
HEADER = "label,p_cat,p_dog,p_bird"
GOOD_ROWS = ["cat,0.7,0.2,0.1", "dog,0.1,0.8,0.1", "bird,0.2,0.2,0.6", "cat,0.5,0.25,0.25"]
GOOD_PROBS = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]]
GOOD_LABELS = [0, 1, 2, 0]
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes")


# --------------------------------------------------------------------------------------------
# Running the CLI


def good_table() -> dict[str, Any]:
    return {"label": ["cat", "dog", "bird", "cat"], "p_cat": [0.7, 0.1, 0.2, 0.5],
            "p_dog": [0.2, 0.8, 0.2, 0.25], "p_bird": [0.1, 0.1, 0.6, 0.25]}


# --------------------------------------------------------------------------------------------
# Message checks


def check_message(result: Result, code: int = 3) -> str:
    """Exit ``code``, nothing on stdout, one short message on stderr: no traceback, no raw
    control characters, a hint."""
    err = result.err
    assert result.code == code, f"exit {result.code}, wanted {code}: {err}"
    assert result.out == ""
    assert "Traceback" not in err, err
    assert err.startswith("xent: error: "), err
    assert err.count("xent: error:") == 1, err
    assert len(err) <= MAX_MESSAGE_CHARS, f"{len(err)}-character message"
    assert 0 < len(err.splitlines()) <= MAX_MESSAGE_LINES, err
    assert "hint" in err.lower(), f"no hint in: {err}"
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", err), f"raw control character in: {err!r}"
    return err


def check_data_error(result: Result, path: Path, **where: Any) -> str:
    """A data error (exit 3) naming the file and every part of the location given (``row``,
    ``line``, ``column``, ``value``)."""
    return check_location(check_message(result, 3), path, **where)


def check_scored(result: Result) -> dict[str, Any]:
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    return load_json(result.out)


# --------------------------------------------------------------------------------------------
# Encodings


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """Excel writes a BOM: it must not become part of the first column's name."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join([HEADER, *GOOD_ROWS]) + "\n").encode())
    report = check_scored(run_main("score", path, "-f", "json"))
    assert report["layout"]["label_column"] == "label"
    assert report["layout"]["classes"] == ["cat", "dog", "bird"]
    assert report["rows"] == {"read": 4, "scored": 4, "skipped": 0, "skipped_by_reason": {},
                              "clipped": 0}
    expected = log_loss(GOOD_LABELS, GOOD_PROBS, labels=[0, 1, 2])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_csv_is_a_data_error(tmp_path: Path, encoding: str) -> None:
    path = write_csv(tmp_path / "wide_chars.csv", [HEADER, *GOOD_ROWS], encoding=encoding)
    err = check_data_error(run_main("score", path), path)
    assert "UTF-8" in err


def test_latin1_column_name_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1_header.csv"
    path.write_bytes(b"label,p_caf\xe9,p_dog\ncaf\xe9,0.5,0.5\ndog,0.4,0.6\n")
    err = check_data_error(run_main("score", path), path)
    assert "UTF-8" in err


@pytest.mark.parametrize("rows_before", [2, 120_000], ids=["first-block", "past-first-block"])
def test_invalid_utf8_in_a_label(tmp_path: Path, rows_before: int) -> None:
    """A latin-1 'café' among UTF-8 labels; past the first 4 MiB block the typed read has
    already scored chunks when it meets the bytes."""
    body = ("\n".join([HEADER, *(GOOD_ROWS[i % 4] for i in range(rows_before))]) + "\n").encode()
    path = tmp_path / "mixed.csv"
    path.write_bytes(body + b"caf\xe9,0.7,0.2,0.1\n" + (GOOD_ROWS[1] + "\n").encode())
    err = check_data_error(run_main("score", path, "-f", "json"), path)
    assert "UTF-8" in err


# --------------------------------------------------------------------------------------------
# Numbers at the edge of float64


def _underflow_csv(tmp_path: Path, cell_row: str) -> Path:
    return write_csv(tmp_path / "tiny.csv", [HEADER, *GOOD_ROWS, cell_row])


@pytest.mark.parametrize("tiny", ["1e-400", "-1e-400", "4.9e-324"])
def test_underflow_is_a_valid_small_probability(tmp_path: Path, tiny: str) -> None:
    """1e-400 parses to 0 (-1e-400 to -0.0): a probability of 0, not an invalid cell. In a
    column other than the label's it changes nothing."""
    path = _underflow_csv(tmp_path, f"cat,0.5,{tiny},0.5")
    report = check_scored(run_main("score", path, "-f", "json"))
    assert report["rows"]["scored"] == 5 and report["rows"]["skipped"] == 0
    assert report["rows"]["clipped"] == 0
    probs = [*GOOD_PROBS, [0.5, float(tiny), 0.5]]
    expected = np.mean([-math.log(p[y]) for p, y in zip(probs, [*GOOD_LABELS, 0], strict=True)])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


def test_underflow_in_the_true_class_is_clipped(tmp_path: Path) -> None:
    """On the label's own class the 0 is clipped to eps and counted; with --eps 0 the loss is
    infinite and JSON says null, never a large finite number."""
    path = _underflow_csv(tmp_path, "cat,1e-400,0.5,0.5")
    report = check_scored(run_main("score", path, "-f", "json"))
    assert report["rows"]["scored"] == 5 and report["rows"]["clipped"] == 1
    losses = [-math.log(p[y]) for p, y in zip(GOOD_PROBS, GOOD_LABELS, strict=True)]
    expected = (sum(losses) - math.log(EPS)) / 5
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)

    unclipped = check_scored(run_main("score", path, "-f", "json", "--eps", "0"))
    assert unclipped["metrics"]["cross_entropy"] is None
    assert unclipped["rows"]["scored"] == 5


# --------------------------------------------------------------------------------------------
# Labels that look like missing values


NA_LIKE = ["NA", "N/A", "n/a", "#N/A", "#NA", "NULL", "null", "None", "nan", "NaN", "-nan", "<NA>",
           "1.#QNAN"]


def _write_na_like(tmp_path: Path, fmt: str, labels: list[str | None], probs: np.ndarray) -> Path:
    columns = {f"p_{name}": probs[:, k] for k, name in enumerate(NA_LIKE)}
    if fmt == "csv":
        path = tmp_path / "na.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["label", *columns])
            for i, label in enumerate(labels):
                writer.writerow(["" if label is None else label, *(repr(float(p)) for p in probs[i])])
        return path
    table = pa.table({"label": pa.array(labels, pa.string()), **columns})
    if fmt == "parquet":
        path = tmp_path / "na.parquet"
        pq.write_table(table, path, use_dictionary=True, row_group_size=5)
    elif fmt == "arrow":
        path = tmp_path / "na.arrow"
        feather.write_feather(table, path)
    else:
        path = tmp_path / "na.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in table.to_pylist():
                handle.write(json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow", "jsonl"])
def test_na_like_strings_are_classes_and_a_real_null_is_missing(tmp_path: Path, fmt: str) -> None:
    """pandas' default NA spellings are class names when written as text; only a real missing
    value (an empty CSV cell, a Parquet/Arrow/JSON null) is a missing label, counted by reason."""
    order = [*range(len(NA_LIKE)), *range(len(NA_LIKE))]
    labels: list[str | None] = [NA_LIKE[k] for k in order]
    labels.insert(7, None)
    probs = np.full((len(labels), len(NA_LIKE)), 0.01)
    truth = [*order[:7], 0, *order[7:]]
    for i, k in enumerate(truth):
        probs[i, k] = 1.0 - 0.01 * (len(NA_LIKE) - 1)
    path = _write_na_like(tmp_path, fmt, labels, probs)
    result = run_main("score", path, "-f", "json", "--on-invalid", "skip", "--chunk-rows", 4)
    report = check_scored(result)
    assert report["layout"]["classes"] == NA_LIKE
    assert report["rows"]["read"] == len(labels)
    assert report["rows"]["skipped_by_reason"] == {"missing_label": 1}
    assert [c["support"] for c in report["per_class"]] == [2.0] * len(NA_LIKE)
    good = [i for i in range(len(labels)) if labels[i] is not None]
    expected = log_loss([truth[i] for i in good], probs[good], labels=list(range(len(NA_LIKE))))
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


# --------------------------------------------------------------------------------------------
# Schema problems


@pytest.mark.parametrize(("fmt", "names"), [
    ("csv", ["label", "p_cat", "p_cat", "p_bird"]),
    ("csv", ["label", "label", "p_cat", "p_dog"]),
    ("parquet", ["label", "p_cat", "p_cat", "p_bird"]),
    ("arrow", ["label", "p_cat", "p_cat", "p_bird"]),
], ids=["csv-pred", "csv-label", "parquet", "arrow"])
def test_duplicate_column_names(tmp_path: Path, fmt: str, names: list[str]) -> None:
    path = tmp_path / f"dup.{fmt}"
    if fmt == "csv":
        write_csv(path, [",".join(names), "cat,cat,0.5,0.5" if names[1] == "label" else GOOD_ROWS[0]])
    else:
        table = pa.Table.from_arrays([pa.array(["cat"]), pa.array([0.5]), pa.array([0.3]),
                                      pa.array([0.2])], names=names)
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            feather.write_feather(table, path)
    err = check_data_error(run_main("score", path), path)
    assert "duplicate" in err
    duplicated = next(n for n in names if names.count(n) > 1)
    assert duplicated in err


def test_ambiguous_label_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "two_labels.csv",
                     ["label,Label,p_cat,p_dog", "cat,dog,0.6,0.4", "dog,dog,0.3,0.7"])
    err = check_data_error(run_main("score", path), path, value="Label")
    assert "--label" in err.split("hint", 1)[1]


def test_ambiguous_list_columns(tmp_path: Path) -> None:
    probs = pa.array([[0.6, 0.4], [0.3, 0.7]], pa.list_(pa.float64()))
    path = write_parquet(tmp_path / "two_lists.parquet",
                         {"label": ["a", "b"], "probs": probs, "pred": probs})
    err = check_data_error(run_main("score", path, "--classes", "a,b"), path, value="pred")
    assert "probs" in err
    assert "--pred" in err.split("hint", 1)[1]


def _schema_variant(tmp_path: Path, variant: str) -> Path:
    table = good_table()
    if variant == "missing-column":
        del table["p_bird"]
    elif variant == "extra-prediction-column":
        table["p_cow"] = [0.0] * 4
    elif variant == "integer-labels":
        table["label"] = [0, 1, 2, 0]
    elif variant == "text-probabilities":
        table["p_dog"] = ["0.2", "0.8", "zero point two", "0.25"]
    return write_parquet(tmp_path / f"second_{variant}.parquet", table)


@pytest.mark.parametrize("variant", ["missing-column", "extra-prediction-column", "integer-labels",
                                     "text-probabilities"])
def test_second_file_with_another_schema(tmp_path: Path, variant: str) -> None:
    """The second file does not fit the layout taken from the first: a data error that names
    the second file, never rows silently dropped or scored against the wrong classes."""
    first = write_parquet(tmp_path / "first.parquet", good_table())
    second = _schema_variant(tmp_path, variant)
    result = run_main("score", first, second, "-f", "json")
    check_data_error(result, second)


def test_list_width_differs_across_files(tmp_path: Path) -> None:
    three = pa.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]], pa.list_(pa.float64()))
    two = pa.array([[0.6, 0.4], [0.2, 0.8]], pa.list_(pa.float64()))
    first = write_parquet(tmp_path / "three.parquet", {"label": ["a", "b"], "probs": three})
    second = write_parquet(tmp_path / "two.parquet", {"label": ["a", "b"], "probs": two})
    result = run_main("score", first, second, "--classes", "a,b,c")
    check_data_error(result, second, row=1, column="probs")


def test_same_columns_in_other_formats_and_order_score_as_one_stream(tmp_path: Path) -> None:
    """CSV, TSV and Parquet with the same columns (the Parquet file in another column order)
    are one stream; if the order is refused, the refusal is a located data error."""
    csv_path = write_csv(tmp_path / "a.csv", [HEADER, *GOOD_ROWS[:2]])
    tsv_path = write_csv(tmp_path / "b.tsv", [HEADER.replace(",", "\t"), GOOD_ROWS[2].replace(",", "\t")])
    table = good_table()
    reordered = {k: table[k][3:] for k in ("p_bird", "label", "p_dog", "p_cat")}
    pq_path = write_parquet(tmp_path / "c.parquet", reordered)
    result = run_main("score", csv_path, tsv_path, "-f", "json")
    report = check_scored(result)
    assert report["rows"]["scored"] == 3
    expected = log_loss(GOOD_LABELS[:3], GOOD_PROBS[:3], labels=[0, 1, 2])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)

    result = run_main("score", csv_path, tsv_path, pq_path, "-f", "json")
    if result.code == 0:
        report = check_scored(result)
        assert report["rows"]["scored"] == 4
        expected = log_loss(GOOD_LABELS, GOOD_PROBS, labels=[0, 1, 2])
        assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)
    else:
        check_data_error(result, pq_path)


def test_bad_rows_in_two_files_are_each_located_in_their_file(tmp_path: Path) -> None:
    """Rows are numbered per file, so each located row must say which file it is in."""
    first = write_csv(tmp_path / "first.csv", [HEADER, GOOD_ROWS[0], "dog,0.1,1.5,0.1", GOOD_ROWS[2]])
    second = write_csv(tmp_path / "second.csv", [HEADER, GOOD_ROWS[0], GOOD_ROWS[1], "cow,0.3,0.3,0.4"])
    err = check_message(run_main("score", first, second), 3)
    assert re.search(r"\b2 invalid rows\b", err), err
    lines = err.splitlines()
    at_row_2 = next(x for x in lines if re.search(r"\brow 2\b", x))
    at_row_3 = next(x for x in lines if re.search(r"\brow 3\b", x))
    assert "first.csv" in at_row_2 and "second.csv" not in at_row_2, err
    assert "second.csv" in at_row_3 and "first.csv" not in at_row_3, err


# --------------------------------------------------------------------------------------------
# Damaged Parquet containers


def _garbage_parquet(kind: str, seed: int) -> bytes:
    rng = random.Random(seed)
    body = rng.randbytes(rng.randint(16, 4096))
    if kind == "magic-then-garbage":
        return b"PAR1" + body
    if kind == "magic-at-both-ends":
        return b"PAR1" + body + b"PAR1"
    # a footer length that fits the file, so the garbage reaches the Thrift decoder
    footer = rng.randint(1, len(body)).to_bytes(4, "little")
    return b"PAR1" + body + footer + b"PAR1"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["magic-then-garbage", "magic-at-both-ends", "plausible-footer"])
def test_garbage_behind_parquet_magic(tmp_path: Path, kind: str, seed: int) -> None:
    path = tmp_path / "garbage.parquet"
    path.write_bytes(_garbage_parquet(kind, seed))
    started = time.monotonic()
    result = run_main("score", path, "-f", "json")
    assert time.monotonic() - started < 2.0
    check_data_error(result, path)


@pytest.mark.parametrize("footer", [0x7FFFFFFF, 0xFFFFFFFF, "whole-file"])
def test_absurd_parquet_footer_is_refused_quickly(tmp_path: Path, footer: int | str) -> None:
    """The 4 bytes before the closing PAR1 claim the footer's size; a lie must be refused
    before anything of that size is allocated or read."""
    good = write_parquet(tmp_path / "good.parquet", good_table())
    data = bytearray(good.read_bytes())
    claim = len(data) - 12 if footer == "whole-file" else int(footer)
    data[-8:-4] = claim.to_bytes(4, "little")
    path = tmp_path / "absurd.parquet"
    path.write_bytes(bytes(data))
    started = time.monotonic()
    result = run_main("score", path, "-f", "json")
    assert time.monotonic() - started < 2.0
    check_data_error(result, path)


@pytest.mark.parametrize("compression", ["snappy", "zstd", "none"])
def test_flipped_bytes_in_parquet_data_pages(tmp_path: Path, compression: str) -> None:
    """Random damage to data pages (the footer intact): a located error or, where the damage
    still decodes, a report; never a crash or a hang."""
    rng = np.random.default_rng(7)
    probs = rng.dirichlet([1.0, 1.0, 1.0], 1500)
    labels = np.array(["cat", "dog", "bird"])[rng.integers(0, 3, 1500)]
    good = write_parquet(tmp_path / "good.parquet",
                         {"label": labels, "p_cat": probs[:, 0], "p_dog": probs[:, 1],
                          "p_bird": probs[:, 2], "probs": list(probs)},
                         compression=compression, row_group_size=400)
    data = good.read_bytes()
    data_end = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    path = tmp_path / "flipped.parquet"
    for seed in range(12):
        flip = random.Random(seed)
        damaged = bytearray(data)
        for _ in range(flip.randint(1, 20)):
            damaged[flip.randrange(4, data_end)] = flip.randrange(256)
        path.write_bytes(bytes(damaged))
        columns = ["--pred", "probs", "--classes", "cat,dog,bird"] if seed % 2 else ["--pred", "p_*"]
        result = run_main("score", path, "-f", "json", "--chunk-rows", 300, *columns)
        if result.code == 0:
            check_scored(result)
        else:
            check_data_error(result, path)


# --------------------------------------------------------------------------------------------
# Extension types


class ProbabilityType(pa.ExtensionType):
    """A user-defined extension type over float64 storage."""

    def __init__(self) -> None:
        super().__init__(pa.float64(), "xent_test.probability")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: pa.DataType, serialized: bytes) -> ProbabilityType:
        return cls()


@pytest.fixture
def probability_type() -> Any:
    extension = ProbabilityType()
    pa.register_extension_type(extension)
    try:
        yield extension
    finally:
        with contextlib.suppress(KeyError, pa.ArrowKeyError):
            pa.unregister_extension_type("xent_test.probability")


def _write_table(path: Path, table: pa.Table) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        feather.write_feather(table, path)
    return path


def _custom_extension_table(extension: ProbabilityType) -> pa.Table:
    p_cat = pa.ExtensionArray.from_storage(extension, pa.array([0.6, 0.3]))
    return pa.table({"label": ["cat", "dog"], "p_cat": p_cat, "p_dog": [0.4, 0.7]})


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_custom_extension_type_column(tmp_path: Path, probability_type: ProbabilityType,
                                      suffix: str) -> None:
    path = _write_table(tmp_path / f"ext{suffix}", _custom_extension_table(probability_type))
    err = check_data_error(run_main("score", path), path, column="p_cat")
    assert "extension" in err


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_uuid_extension_type_column(tmp_path: Path, suffix: str) -> None:
    """pa.uuid() is a canonical extension type (a pa.BaseExtensionType, not a pa.ExtensionType);
    SPEC section 3 lists extension-typed columns among the schema errors."""
    ids = pa.array([uuid.UUID(int=1).bytes, uuid.UUID(int=2).bytes], pa.uuid())
    table = pa.table({"label": ["cat", "dog"], "p_cat": [0.6, 0.3], "p_dog": [0.4, 0.7], "row_id": ids})
    path = _write_table(tmp_path / f"uuid{suffix}", table)
    err = check_data_error(run_main("score", path), path, column="row_id")
    assert "extension" in err


def test_unregistered_extension_type_column(tmp_path: Path, probability_type: ProbabilityType) -> None:
    """Written by a process that knew the type, read by one that does not: pyarrow hands over
    the float64 storage and keeps the type's name in the field metadata. The file still
    declares an extension-typed column."""
    path = _write_table(tmp_path / "ext.parquet", _custom_extension_table(probability_type))
    pa.unregister_extension_type("xent_test.probability")
    err = check_data_error(run_main("score", path), path, column="p_cat")
    assert "extension type 'xent_test.probability'" in err  # its name, not its storage's


def test_feather_version_1(tmp_path: Path) -> None:
    """The old Feather format (pyarrow still writes it, with a deprecation warning)."""
    path = tmp_path / "v1.feather"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        feather.write_feather(pa.table({"label": ["cat", "dog"], "p_cat": [0.6, 0.3], "p_dog": [0.4, 0.7]}),
                              path, version=1)
    err = check_data_error(run_main("score", path), path)
    assert "Feather version 1" in err and "write_feather" in err
    piped = run_proc("score", "-", stdin=path.read_bytes())
    assert piped.code == 3 and "Feather version 1" in piped.err


# --------------------------------------------------------------------------------------------
# Damaged compressed text


def _compressed(text: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.compress(text)
    if codec == "bz2":
        return bz2.compress(text)
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as stream:
        stream.write(text)
    return bytes(sink.getvalue().to_pybytes())


def _damage(data: bytes, how: str) -> bytes:
    damaged = bytearray(data)
    if how == "truncated":
        return bytes(damaged[: len(damaged) // 2])
    if how == "flipped":
        for i in range(20, 60):
            damaged[i] ^= 0xFF
    elif how == "crc":  # gzip trailer: CRC32 of the data, then its length
        damaged[-8] ^= 0xFF
    elif how == "isize":
        damaged[-1] ^= 0xFF
    elif how == "header-only":
        return bytes(damaged[:10])
    return bytes(damaged)


@pytest.mark.parametrize(("codec", "suffix", "how"), [
    ("gzip", ".csv.gz", "truncated"),
    ("gzip", ".csv.gz", "flipped"),
    ("gzip", ".csv.gz", "crc"),
    ("gzip", ".csv.gz", "isize"),
    ("gzip", ".csv.gz", "header-only"),
    ("bz2", ".csv.bz2", "truncated"),
    ("zstd", ".csv.zst", "truncated"),
    ("zstd", ".tsv.zst", "flipped"),
])
def test_corrupt_compressed_csv(tmp_path: Path, codec: str, suffix: str, how: str) -> None:
    lines = [HEADER, *(GOOD_ROWS[i % 4] for i in range(3000))]
    delimiter = "\t" if suffix.startswith(".tsv") else ","
    text = ("\n".join(lines) + "\n").replace(",", delimiter).encode()
    path = tmp_path / f"preds{suffix}"
    path.write_bytes(_damage(_compressed(text, codec), how))
    check_data_error(run_main("score", path, "-f", "json"), path)


def test_plain_text_named_gz(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "plain.csv.gz", [HEADER, *GOOD_ROWS])
    check_data_error(run_main("score", path), path)


# --------------------------------------------------------------------------------------------
# Size extremes


AS_LIMIT_BYTES = 3 << 30


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS as a stand-in for a small machine")
def test_twenty_thousand_columns(tmp_path: Path) -> None:
    """Three rows, 20,000 classes, run under a 3 GiB address-space limit (a small CI runner):
    memory is bounded by the data, so this either scores or says clearly why not; an internal
    error or an out-of-memory kill is a failure."""
    n = 20_000
    share = repr(1.0 / n)
    lines = ["label," + ",".join(f"p_c{k}" for k in range(n))]
    lines += [f"c{k}," + ",".join([share] * n) for k in (0, 7, 19_999)]
    path = write_csv(tmp_path / "wide.csv", lines)
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, "
              f"({AS_LIMIT_BYTES}, {AS_LIMIT_BYTES})); from xentcli.cli import main; main()")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script, "score", str(path), "-f", "json"],
                          capture_output=True, timeout=120, env=clean_env())
    elapsed = time.monotonic() - started
    result = Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    if result.code == 0:
        report = check_scored(result)
        assert len(report["layout"]["classes"]) == n
        assert report["rows"]["scored"] == 3
        assert report["metrics"]["cross_entropy"] == pytest.approx(-math.log(1.0 / n), rel=RTOL)
    else:
        check_data_error(result, path)
    assert elapsed < 30, f"{elapsed:.1f} s for three rows"


def test_ten_megabyte_label_csv(tmp_path: Path) -> None:
    path = tmp_path / "huge_field.csv"
    path.write_bytes(("\n".join([HEADER, GOOD_ROWS[0]]) + "\n" + "x" * 10_000_000 + ",0.1,0.8,0.1\n"
                      + GOOD_ROWS[2] + "\n").encode())
    check_data_error(run_main("score", path, "-f", "json"), path)


def test_ten_megabyte_label_parquet(tmp_path: Path) -> None:
    table = good_table()
    table["label"] = ["cat", "x" * 10_000_000, "bird", "cat"]
    path = write_parquet(tmp_path / "huge_field.parquet", table)
    check_data_error(run_main("score", path, "-f", "json"), path, row=2, column="label", value="'xxx")


# --------------------------------------------------------------------------------------------
# Control characters and markup in names and labels


ESC_RED = "\x1b[31m"
MARKUP = "[bold red]x[/]"


def test_control_characters_in_a_bad_label_are_escaped(tmp_path: Path) -> None:
    """A label holding ESC, a tab, a newline and rich markup is quoted escaped; the markup is
    printed literally, not interpreted."""
    path = tmp_path / "ctrl.csv"
    rows = [HEADER, GOOD_ROWS[0], f'"{ESC_RED}cat\t{MARKUP}\nnext",0.7,0.2,0.1', GOOD_ROWS[1]]
    path.write_bytes(("\n".join(rows) + "\n").encode())
    err = check_data_error(run_main("score", path), path, row=2, column="label")
    assert "\\x1b[31m" in err and "\\t" in err and "\\n" in err
    assert MARKUP in err


def test_control_characters_in_column_names_are_escaped(tmp_path: Path) -> None:
    names = [f"p_{ESC_RED}red", f"p_{MARKUP}", "p_tab\there"]
    path = tmp_path / "ctrl_columns.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label", *names])
        writer.writerow([f"{ESC_RED}red", 0.5, 0.25, 0.25])
        writer.writerow([MARKUP, 1.5, 0.0, 0.0])
    err = check_data_error(run_main("score", path), path, row=2, value="1.5")
    assert "p_\\x1b[31mred" in err


def test_control_characters_in_class_names_of_an_error(tmp_path: Path) -> None:
    """The 'expected one of the classes (...)' part quotes names from the file too."""
    path = tmp_path / "ctrl_classes.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label", f"p_{ESC_RED}red", f"p_{MARKUP}"])
        writer.writerow([f"{ESC_RED}red", 0.6, 0.4])
        writer.writerow(["cow", 0.3, 0.7])
    err = check_data_error(run_main("score", path), path, row=2, value="'cow'")
    assert MARKUP in err


def test_missing_column_hint_escapes_column_names(tmp_path: Path) -> None:
    path = tmp_path / "ctrl_hint.csv"
    path.write_bytes(f'label,"p_{ESC_RED}red",p_ok\nok,0.5,0.5\n'.encode())
    check_data_error(run_main("score", path, "--pred", "p_red,p_ok"), path, value="p_red")


def test_hostile_class_names_in_reports(tmp_path: Path) -> None:
    """JSON carries the names exactly (json escapes them); the table for people shows them
    escaped like every other echo of file content, and markup literally."""
    path = tmp_path / "ctrl_report.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label", f"p_{ESC_RED}red", f"p_{MARKUP}"])
        writer.writerow([f"{ESC_RED}red", 0.6, 0.4])
        writer.writerow([MARKUP, 0.3, 0.7])
    report = check_scored(run_main("score", path, "-f", "json"))
    assert report["layout"]["classes"] == [f"{ESC_RED}red", MARKUP]
    table = run_main("score", path)
    assert table.code == 0, table.err
    assert MARKUP in table.out
    assert "\x1b" not in table.out, "raw ESC from the file in the table report"


# --------------------------------------------------------------------------------------------
# Locations that text parsing can get wrong


def test_line_numbers_after_a_multiline_field(tmp_path: Path) -> None:
    """A quoted label spanning two lines shifts every later row down one line."""
    path = tmp_path / "multiline.csv"
    lines = ["label,p_cat,p_dog", "cat,0.6,0.4", '"dog', 'more",0.3,0.7', "cat,1.5,0.4"]
    write_csv(path, lines)
    result = run_main("score", path, "--classes", "cat,dog")
    err = check_data_error(result, path, row=2, line=3)
    assert re.search(r"\brow 3 \(line 5\)", err), err


@pytest.mark.parametrize("cell", ["0.6_0", "\uff10.6", "\u0660.\u0666"],
                         ids=["underscore", "fullwidth", "arabic-indic"])
def test_bad_text_cell_is_named_in_its_own_column(tmp_path: Path, cell: str) -> None:
    """Cells that Python's float() accepts but a CSV number parser does not: the message must
    still point at the column that holds the cell, not at the first prediction column."""
    path = write_csv(tmp_path / "text_cell.csv", [HEADER, GOOD_ROWS[0], f"dog,0.3,{cell},0.1"])
    err = check_data_error(run_main("score", path), path, row=2, line=3, column="p_dog")
    assert "column 'p_cat'" not in err, err


def test_all_empty_probability_column_is_located(tmp_path: Path) -> None:
    """Every cell of the only probability column empty: null cells (invalid rows, SPEC section
    3) in a column that is there, not "no prediction columns found"."""
    path = write_csv(tmp_path / "empty_column.csv", ["label,p_pos", "1,", "0,"])
    check_data_error(run_main("score", path), path, row=1, line=2, column="p_pos")


def test_everything_skipped_names_the_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "all_bad.csv", [HEADER, "cow,0.3,0.3,0.4", "dog,1.5,0.1,0.1"])
    check_data_error(run_main("score", path, "--on-invalid", "skip"), path)


@pytest.mark.parametrize(("lines", "extra"), [
    (["label,p_pos", "1,inf", "0,0.5"], []),
    (["label,p_pos", "1,-inf", "0,0.5"], ["--on-invalid", "skip", "-q"]),
    (["label,p_a,p_b", "a,inf,-inf", "b,0.5,0.5"], []),
], ids=["binary-inf", "binary-minus-inf-skip-quiet", "inf-minus-inf"])
def test_no_numpy_warnings_on_stderr(tmp_path: Path, lines: list[str], extra: list[str]) -> None:
    """A real process: NumPy's RuntimeWarning (inf - inf in a row sum) would be two more lines
    on stderr, with a path inside site-packages; -q must leave stderr empty."""
    path = write_csv(tmp_path / "infinite.csv", lines)
    proc = subprocess.run(xent_command("score", path, "-f", "json", *extra), capture_output=True,
                          timeout=60, env=clean_env())
    err = proc.stderr.decode()
    assert "Warning" not in err, err
    if "-q" in extra:
        assert proc.returncode == 0 and err == ""
    else:
        check_data_error(Result(proc.returncode, proc.stdout.decode(), err), path, row=1, value="inf")


# --------------------------------------------------------------------------------------------
# --on-invalid skip over chunk boundaries


CLASSES = ("cat", "dog", "bird")
# position → how the row is broken; with --chunk-rows 4 chunks start at 0, 4, 8, ...: the bad
# rows sit on both sides of boundaries, fill a whole chunk (36..39) and end the file.
DAMAGE = {0: "nan", 3: "above", 4: "unknown", 7: "missing-label", 8: "empty", 11: "negative",
          12: "sum", 15: "inf", 16: "text", 35: "nan", 36: "nan", 37: "unknown", 38: "sum",
          39: "empty", 40: "ragged", 63: "inf", 64: "above", 99: "sum"}
REASON = {"nan": "not_finite", "inf": "not_finite", "above": "out_of_range",
          "negative": "out_of_range", "unknown": "unknown_label", "missing-label": "missing_label",
          "empty": "null", "sum": "sum_off", "text": "not_a_number", "ragged": "ragged_row"}


def _skip_rows(n: int = 100) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    rng = np.random.default_rng(11)
    probs = rng.dirichlet([1.0, 1.0, 1.0], n)
    labels = rng.integers(0, 3, n)
    cells = []
    for i in range(n):
        row = [CLASSES[labels[i]], *(repr(float(p)) for p in probs[i])]
        damage = DAMAGE.get(i)
        if damage in ("nan", "inf", "above", "negative", "empty", "text"):
            row[2] = {"nan": "nan", "inf": "inf", "above": "1.5", "negative": "-0.25", "empty": "",
                      "text": "n/a"}[damage]
        elif damage == "unknown":
            row[0] = "cow"
        elif damage == "missing-label":
            row[0] = ""
        elif damage == "sum":
            row[1:] = ["0.9", "0.9", "0.9"]
        elif damage == "ragged":
            row.append("0.0")
        cells.append(row)
    return probs, labels, cells


def _expected_skip(probs: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, int]]:
    good = [i for i in range(len(labels)) if i not in DAMAGE]
    reasons: dict[str, int] = {}
    for damage in DAMAGE.values():
        reasons[REASON[damage]] = reasons.get(REASON[damage], 0) + 1
    return float(log_loss(labels[good], probs[good], labels=[0, 1, 2])), reasons


@pytest.mark.parametrize("chunk_rows", [4, 1, 7])
def test_skip_over_chunk_boundaries_csv(tmp_path: Path, chunk_rows: int) -> None:
    probs, labels, cells = _skip_rows()
    path = write_csv(tmp_path / "skip.csv", [HEADER] + [",".join(row) for row in cells])
    result = run_main("score", path, "--on-invalid", "skip", "--chunk-rows", chunk_rows, "-f", "json")
    report = check_scored(result)
    expected, reasons = _expected_skip(probs, labels)
    assert report["rows"]["read"] == 100
    assert report["rows"]["scored"] == 100 - len(DAMAGE)
    assert report["rows"]["skipped"] == len(DAMAGE)
    assert report["rows"]["skipped_by_reason"] == reasons
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)
    assert f"skipped {len(DAMAGE)} invalid rows" in result.err


def test_skip_over_row_group_and_chunk_boundaries_parquet(tmp_path: Path) -> None:
    """Row groups of 7 rows read in chunks of 4: batches of 4 and 3 rows."""
    probs, labels, cells = _skip_rows()
    kept = [i for i in range(100) if DAMAGE.get(i) not in ("ragged", "text")]
    p_dog = [None if cells[i][2] == "" else float(cells[i][2]) for i in kept]
    path = write_parquet(tmp_path / "skip.parquet", {
        "label": [cells[i][0] or None for i in kept],
        "p_cat": [float(cells[i][1]) for i in kept],
        "p_dog": pa.array(p_dog, pa.float64()),
        "p_bird": [float(cells[i][3]) for i in kept],
    }, row_group_size=7)
    result = run_main("score", path, "--on-invalid", "skip", "--chunk-rows", 4, "-f", "json")
    report = check_scored(result)
    bad = [i for i in kept if i in DAMAGE]
    good = [i for i in kept if i not in DAMAGE]
    assert report["rows"]["read"] == len(kept)
    assert report["rows"]["skipped"] == len(bad)
    expected = log_loss(labels[good], probs[good], labels=[0, 1, 2])
    assert report["metrics"]["cross_entropy"] == pytest.approx(expected, rel=RTOL)


# --------------------------------------------------------------------------------------------
# Closed pipes


@pytest.fixture(scope="module")
def many_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 rows with ids: with --worst 3000 every report is far larger than a pipe buffer."""
    rng = np.random.default_rng(3)
    n = 5000
    probs = rng.dirichlet([1.0, 1.0, 1.0], n)
    path = tmp_path_factory.mktemp("pipe") / "big.parquet"
    return write_parquet(path, {"id": np.arange(n), "label": np.array(CLASSES)[rng.integers(0, 3, n)],
                                "p_cat": probs[:, 0], "p_dog": probs[:, 1], "p_bird": probs[:, 2]})


def _run_with_closing_reader(args: list[object], read_first: int) -> Result:
    """Like ``xent ARGS | head -c N``: the reader takes ``read_first`` bytes, then closes."""
    proc = subprocess.Popen(xent_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env())
    assert proc.stdout is not None and proc.stderr is not None
    if read_first:
        proc.stdout.read(read_first)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    return Result(code, "", err)


@POSIX_ONLY
@pytest.mark.parametrize("fmt", ["json", "table", "csv"])
@pytest.mark.parametrize("read_first", [0, 1], ids=["closed-before", "head-c-1"])
def test_closed_pipe_ends_quietly(many_rows: Path, fmt: str, read_first: int) -> None:
    result = _run_with_closing_reader(["score", many_rows, "-f", fmt, "--worst", 3000, "--id", "id"],
                                      read_first)
    assert result.code == 0, result.err
    assert result.err == ""


@POSIX_ONLY
def test_closed_pipe_keeps_a_failed_gate(many_rows: Path) -> None:
    """`xent score ... --fail-if ... | head` under `set -o pipefail`: a closed pipe must not turn
    a failed gate into a pass."""
    args = ["score", many_rows, "-f", "json", "--worst", 3000, "--id", "id",
            "--fail-if", "cross_entropy > 0"]
    result = _run_with_closing_reader(args, 1)
    assert result.code == 1, result.err
    assert "Traceback" not in result.err


@POSIX_ONLY
def test_closed_pipe_inspect(many_rows: Path) -> None:
    result = _run_with_closing_reader(["inspect", many_rows], 0)
    assert result.code == 0, result.err
    assert result.err == ""


# --------------------------------------------------------------------------------------------
# Ctrl-C


def _wait_until_working(proc: subprocess.Popen[bytes], deadline_s: float = 15.0) -> None:
    """Until the child runs more than one thread (the reader thread, Arrow's pool): it is past
    start-up and scoring. A SIGINT during interpreter start-up is not what this tests."""
    started = time.monotonic()
    task_dir = Path(f"/proc/{proc.pid}/task")
    while time.monotonic() - started < deadline_s and proc.poll() is None:
        if not task_dir.exists():
            time.sleep(1.0)
            return
        if len(list(task_dir.iterdir())) > 1:
            return
        time.sleep(0.02)


@POSIX_ONLY
def test_ctrl_c_exits_130_without_a_report(tmp_path: Path) -> None:
    n = 1_500_000
    rng = np.random.default_rng(5)
    probs = rng.dirichlet([1.0, 1.0, 1.0], n)
    labels = pa.DictionaryArray.from_arrays(rng.integers(0, 3, n).astype(np.int32), list(CLASSES))
    path = write_parquet(tmp_path / "large.parquet", {"label": labels, "p_cat": probs[:, 0],
                                                      "p_dog": probs[:, 1], "p_bird": probs[:, 2]})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    report = out_dir / "out.json"
    # small chunks: several seconds of work, so the signal lands mid-stream
    proc = subprocess.Popen(xent_command("score", path, "-f", "json", "-o", report, "--chunk-rows", 32),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    _wait_until_working(proc)
    time.sleep(0.5)
    assert proc.poll() is None, "finished before the interrupt: make the input larger"
    proc.send_signal(signal.SIGINT)
    out, err_bytes = proc.communicate(timeout=30)
    err = err_bytes.decode()
    assert proc.returncode == 130, err
    assert "interrupted" in err, repr(err)
    assert "Traceback" not in err
    assert out == b""
    assert not report.exists()
    assert list(out_dir.iterdir()) == [], "a temporary file was left behind"


# --------------------------------------------------------------------------------------------
# Internal errors and output faults


def _fail_on_third_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make decode() (run on the read-ahead thread) raise on its third chunk."""
    real = xentcli.stream.decode
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("decoder exploded\nsecond line of detail")
        return real(*args, **kwargs)

    monkeypatch.setattr(xentcli.stream, "decode", flaky)


def _long_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "long.csv", [HEADER, *(GOOD_ROWS[i % 4] for i in range(40))])


def test_internal_error_on_the_reader_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug on the read-ahead thread reaches the main thread: exit 4, one line that points at
    --debug, no report written, no hang."""
    _fail_on_third_call(monkeypatch)
    report = tmp_path / "report.json"
    result = run_main("score", _long_csv(tmp_path), "--chunk-rows", 4, "-f", "json", "-o", report)
    assert result.code == 4, result.err
    assert result.out == ""
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "--debug" in result.err and "RuntimeError" in result.err
    assert not report.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["long.csv"]


def test_internal_error_on_the_reader_thread_with_debug(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on_third_call(monkeypatch)
    result = run_main("score", _long_csv(tmp_path), "--chunk-rows", 4, "--debug")
    assert result.code == 4
    assert result.out == ""
    assert "Traceback" in result.err
    assert "decoder exploded" in result.err


def test_internal_error_while_rendering_leaves_no_report(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_render(*args: Any, **kwargs: Any) -> str:
        raise ValueError("renderer exploded")

    monkeypatch.setattr("xentcli.report.render.render", broken_render)
    report = tmp_path / "out" / "report.json"
    report.parent.mkdir()
    result = run_main("score", _long_csv(tmp_path), "-f", "json", "-o", report)
    assert result.code == 4, result.err
    assert "Traceback" not in result.err and "--debug" in result.err
    assert list(report.parent.iterdir()) == []


@pytest.mark.parametrize("target", ["missing-dir", "a-directory"])
def test_unwritable_output_is_not_an_internal_error(tmp_path: Path, target: str) -> None:
    """-o into a directory that does not exist, or onto a directory: the user's mistake (exit 2
    or 3, one message naming the path), not "this is a bug"; no temporary file left behind."""
    out = tmp_path / "nowhere" / "report.json" if target == "missing-dir" else tmp_path / "adir"
    if target == "a-directory":
        out.mkdir()
    source = _long_csv(tmp_path)
    result = run_main("score", source, "-f", "json", "-o", out)
    assert result.code in (2, 3), result.err
    assert "Traceback" not in result.err
    assert "this is a bug" not in result.err
    assert out.name in result.err
    assert not [p for p in tmp_path.rglob(".xent-*")], "temporary file left behind"
