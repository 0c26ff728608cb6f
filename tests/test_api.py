"""The Python API (SPEC section 7) given what a Python caller gives: paths as Path objects or one
string, a column name where a list is expected, ints for text, and wrong values, which are refused
with xent's own errors instead of a silent wrong number or a traceback from deep inside.
Oracles: scikit-learn and SciPy."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write_csv
from sklearn.metrics import log_loss

from xentcli import Accumulator, LayoutRequest, ScoreOptions, score
from xentcli.errors import DataError, UsageError

RTOL = 1e-12
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
LABELS = np.array([0, 2, 1])


@pytest.fixture()
def wide(tmp_path: Path) -> Path:
    rows = [f"{'abc'[y]},{p[0]!r},{p[1]!r},{p[2]!r},{g}"
            for y, p, g in zip(LABELS.tolist(), PROBS.tolist(), ["x", "y", "x"], strict=True)]
    return write_csv(tmp_path / "wide.csv", ["label,p_a,p_b,p_c,region", *rows])


def test_one_path_as_a_string_or_a_path(wide: Path) -> None:
    """A single string used to be read as a list of one-letter paths."""
    expected = log_loss(LABELS, PROBS)
    for given in (str(wide), wide, [wide]):
        assert score(given).scores.cross_entropy == pytest.approx(expected, rel=RTOL)  # type: ignore[arg-type]


def test_column_names_and_values_as_python_gives_them(wide: Path) -> None:
    """by="region" is one column (it was split into letters); classes as a comma list; base=2."""
    options = ScoreOptions(layout=LayoutRequest(by="region", classes="a, b, c"), base=2)  # type: ignore[arg-type]
    report = score(wide, options)
    assert [dict(g.by) for g in report.groups] == [{"region": "x"}, {"region": "y"}]
    assert list(report.classes) == ["a", "b", "c"]
    assert report.unit == "bits"
    assert report.scores.cross_entropy == pytest.approx(log_loss(LABELS, PROBS) / np.log(2), rel=RTOL)


def test_an_integer_positive_label_is_its_text(tmp_path: Path) -> None:
    """positive=1 named a class 1 beside the label text '1', and scored '1' rows as negative."""
    path = write_csv(tmp_path / "b.csv", ["label,p", "1,0.8", "0,0.3", "1,0.6"])
    report = score(path, ScoreOptions(layout=LayoutRequest(positive=1)))  # type: ignore[arg-type]
    assert list(report.classes) == ["0", "1"]
    assert report.scores.cross_entropy == pytest.approx(log_loss([1, 0, 1], [0.8, 0.3, 0.6]), rel=RTOL)


@pytest.mark.parametrize("options", [
    ScoreOptions(eps="1e-3"), ScoreOptions(sum_tol="0.1"), ScoreOptions(chunk_rows="10"),  # type: ignore[arg-type]
    ScoreOptions(chunk_rows=2.5), ScoreOptions(worst=2.5), ScoreOptions(worst=-1),  # type: ignore[arg-type]
    ScoreOptions(input_format="xls"), ScoreOptions(base="3"),
])
def test_wrong_option_values_are_usage_errors(wide: Path, options: ScoreOptions) -> None:
    with pytest.raises(UsageError):
        score(wide, options)


def test_text_standard_input_is_refused_with_a_hint(wide: Path) -> None:
    with pytest.raises(UsageError, match="binary stream"):
        score(["-"], stdin=io.StringIO(wide.read_text()))  # type: ignore[arg-type]
    report = score(["-"], stdin=io.BytesIO(wide.read_bytes()))
    assert report.scores.cross_entropy == pytest.approx(log_loss(LABELS, PROBS), rel=RTOL)


@pytest.mark.parametrize("kwargs", [
    {"n_classes": 3.0}, {"n_classes": "3"}, {"n_classes": 0}, {"n_classes": True},
    {"n_classes": 3, "scale": "logprob"}, {"n_classes": 3, "eps": 2.0}, {"n_classes": 3, "eps": -1.0},
])
def test_accumulator_settings_are_checked(kwargs: dict[str, object]) -> None:
    """scale="logprob" (a typo) used to score log-probabilities as probabilities: cross-entropy
    36.04 where it is 0.434; eps=2 gave a negative loss."""
    with pytest.raises(UsageError):
        Accumulator(**kwargs)  # type: ignore[arg-type]


def test_accumulator_merges_only_its_own_kind() -> None:
    acc = Accumulator(3)
    for other in (None, Accumulator(4), Accumulator(3, scale="logits"), Accumulator(3, eps=0.1)):
        with pytest.raises(UsageError):
            acc.merge(other)  # type: ignore[arg-type]


def test_accumulator_finalize_base() -> None:
    acc = Accumulator(3)
    acc.update(PROBS, labels=LABELS)
    assert acc.finalize(2).cross_entropy == pytest.approx(log_loss(LABELS, PROBS) / np.log(2), rel=RTOL)
    for base in ("bits", "3", 3):
        with pytest.raises(UsageError):
            acc.finalize(base)


def test_accumulators_compare_by_identity() -> None:
    """Two accumulators used to raise "truth value of an array is ambiguous" when compared."""
    first, second = Accumulator(3), Accumulator(3)
    assert first == first and first != second


def test_an_empty_batch_as_empty_lists() -> None:
    acc = Accumulator(3)
    acc.update([], labels=[])
    acc.update(PROBS, labels=LABELS)
    assert acc.finalize().cross_entropy == pytest.approx(log_loss(LABELS, PROBS), rel=RTOL)


def test_the_report_is_not_changed_through_its_dict(wide: Path) -> None:
    report = score(wide)
    before = json.dumps(report.to_dict())
    for finite in (True, False):
        data = report.to_dict(finite=finite)
        data["layout"]["classes"].append("z")
        data["inputs"].append("other.csv")
        data["rows"]["skipped_by_reason"]["x"] = 1
    assert json.dumps(report.to_dict()) == before


def test_signature_keeps_the_digits_of_eps(wide: Path) -> None:
    """--eps 0.00104 signed as eps:0.001, so a baseline of --eps 0.001 was taken as comparable."""
    assert "|eps:0.00104|" in ScoreOptions(eps=0.00104).signature()
    assert "|eps:0.001|" in ScoreOptions(eps=0.001).signature()
    assert "|eps:2.2e-16|" in ScoreOptions().signature()  # the default, as SPEC shows it
    assert "|sum_tol:0.0012345678|" in ScoreOptions(sum_tol=0.0012345678).signature()


def test_a_batch_over_the_weight_limit_adds_nothing() -> None:
    acc = Accumulator(3)
    with pytest.raises(DataError):
        acc.update(PROBS, labels=LABELS, weights=[1e308, 1e308, 1.0])
    acc.update(PROBS, labels=LABELS, weights=[1.0, 2.0, 3.0])
    expected = log_loss(LABELS, PROBS, sample_weight=[1.0, 2.0, 3.0])
    assert acc.finalize().cross_entropy == pytest.approx(expected, rel=RTOL)


def test_numpy_numbers_are_taken_as_python_numbers(wide: Path) -> None:
    """np.int64(2) for base was refused (with a message printing '2'); a float32 eps compared
    equal to another eps than it clips at."""
    options = ScoreOptions(base=np.int64(2), eps=np.float32(1e-3), sum_tol=np.float64(0.01),  # type: ignore[arg-type]
                           chunk_rows=np.int32(2), worst=np.int64(1))
    report = score(wide, options)
    assert report.unit == "bits" and len(report.worst) == 1
    assert "|eps:0.0010000000474974513|" in report.signature  # the float32's own value
    acc = Accumulator(np.int64(3), eps=np.float32(1e-7))  # type: ignore[arg-type]
    assert type(acc.n_classes) is int and type(acc.eps) is float
    with pytest.raises(UsageError):
        acc.merge(Accumulator(3, eps=1e-7))  # float32's 1e-7 is not 1e-7
    acc.update(PROBS, labels=LABELS)
    in_bits = log_loss(LABELS, PROBS) / np.log(2)
    assert acc.finalize(np.int64(2)).cross_entropy == pytest.approx(in_bits, rel=RTOL)


def test_an_empty_batch_must_still_have_the_classes() -> None:
    acc = Accumulator(3)
    with pytest.raises(DataError, match="preds"):
        acc.update(np.zeros((0, 4)), labels=[])
    with pytest.raises(DataError, match="preds"):
        acc.update(np.zeros((5, 0)), labels=[0] * 5)
