"""End-to-end tests of ``xent score`` (and the CLI's help and version): real files in tmp_path, the
report checked against SPEC section 4 and the numbers against scikit-learn's ``log_loss``.

Most cases call ``xentcli.cli.main(argv)`` in-process (stdout and stderr captured apart by
``capsys``); a few run ``python -m xentcli`` as a real subprocess for exit codes, stdin and pipes.
"""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer.main
from helpers import clean_env, load_json, run_cli, run_proc
from sklearn.metrics import log_loss

from xentcli import __version__
from xentcli.cli import app

RTOL = 1e-9  # against scikit-learn: same formula, different summation order
CLASSES = ("cat", "dog", "bird")
DEFAULT_SIGNATURE = (
    f"xent:{__version__}|base:e|eps:2.2e-16|scale:probs|sum_tol:0.001|renorm:no|weights:no|"
    "invalid:error"
)

# The keys of SPEC section 4, exactly.
TOP_KEYS = {"schema_version", "xent_version", "signature", "inputs", "unit", "layout", "rows",
            "metrics", "per_class", "groups", "worst", "gates", "passed"}
LAYOUT_KEYS = {"target", "label_column", "target_columns", "pred_columns", "classes", "scale",
               "weight_column", "group_columns"}
ROWS_KEYS = {"read", "scored", "skipped", "skipped_by_reason", "clipped"}
METRIC_KEYS = {"cross_entropy", "entropy_target", "kl_divergence", "entropy_pred", "prior_entropy",
               "normalized_cross_entropy", "perplexity", "accuracy", "weight_sum"}
PER_CLASS_KEYS = {"class", "support", "share", "mean_pred", "cross_entropy", "loss_share",
                  "kl_divergence", "entropy_pred", "accuracy"}


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class Data:
    """Labels as class indices (rows,) and predicted probabilities (rows, classes)."""

    labels: np.ndarray
    probs: np.ndarray


def make_data(n_rows: int = 60, n_classes: int = 3, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_classes), size=n_rows)
    labels = rng.integers(0, n_classes, size=n_rows)
    first = min(n_rows, n_classes)
    labels[:first] = np.arange(first)  # every class occurs (when there are enough rows)
    return Data(labels, probs)


def expected_ce(data: Data) -> float:
    """scikit-learn's log loss, columns in our class order (sklearn sorts string labels)."""
    n_classes = data.probs.shape[1]
    return float(log_loss(data.labels, data.probs, labels=list(range(n_classes))))


def write_wide_csv(path: Path, data: Data, classes: tuple[str, ...] = CLASSES) -> Path:
    """label,p_cat,p_dog,... written by hand with repr() so that every float round-trips."""
    lines = ["label," + ",".join(f"p_{c}" for c in classes)]
    for label, row in zip(data.labels, data.probs, strict=True):
        lines.append(classes[label] + "," + ",".join(repr(float(v)) for v in row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_list_parquet(path: Path, data: Data, classes: tuple[str, ...] = CLASSES) -> Path:
    table = pa.table({
        "label": pa.array([classes[k] for k in data.labels], pa.string()),
        "probs": pa.array(data.probs.tolist(), pa.list_(pa.float64())),
    })
    pq.write_table(table, path)
    return path


@pytest.fixture
def data() -> Data:
    return make_data()


@pytest.fixture
def wide_csv(tmp_path: Path, data: Data) -> Path:
    return write_wide_csv(tmp_path / "animals.csv", data)


# --------------------------------------------------------------------------------------------
# Report checks


def check_report_shape(report: dict[str, Any], n_rows: int, classes: list[str]) -> None:
    """Keys exactly those of SPEC section 4, and the counts of a clean run."""
    assert set(report) == TOP_KEYS
    assert set(report["layout"]) == LAYOUT_KEYS
    assert set(report["rows"]) == ROWS_KEYS
    assert set(report["metrics"]) == METRIC_KEYS
    assert [set(entry) for entry in report["per_class"]] == [PER_CLASS_KEYS] * len(classes)
    assert [entry["class"] for entry in report["per_class"]] == classes
    assert report["layout"]["classes"] == classes
    assert report["schema_version"] == 1
    assert report["xent_version"] == __version__
    assert report["unit"] == "nats"
    assert report["rows"] == {"read": n_rows, "scored": n_rows, "skipped": 0,
                              "skipped_by_reason": {}, "clipped": 0}
    assert report["groups"] == [] and report["worst"] == [] and report["gates"] == []
    assert report["passed"] is True
    assert report["metrics"]["weight_sum"] == pytest.approx(n_rows, rel=1e-12)


def check_cross_entropy(report: dict[str, Any], data: Data) -> None:
    metrics = report["metrics"]
    ce = expected_ce(data)
    assert metrics["cross_entropy"] == pytest.approx(ce, rel=RTOL)
    # Hard labels: no target entropy, so all of the loss is KL; perplexity is exp(CE in nats).
    assert metrics["entropy_target"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["kl_divergence"] == pytest.approx(ce, rel=RTOL)
    assert metrics["perplexity"] == pytest.approx(math.exp(ce), rel=RTOL)
    accuracy = float(np.mean(np.argmax(data.probs, axis=1) == data.labels))
    assert metrics["accuracy"] == pytest.approx(accuracy, rel=1e-12)


# --------------------------------------------------------------------------------------------
# Version and help


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "--version")
    assert (result.code, result.out, result.err) == (0, f"xent {__version__}\n", "")


def test_version_subprocess() -> None:
    result = run_proc("--version")
    assert (result.code, result.out.strip(), result.err) == (0, f"xent {__version__}", "")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_root_help_lists_commands(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    result = run_cli(capsys, flag)
    assert result.code == 0 and result.err == ""
    assert "score" in result.out and "inspect" in result.out
    assert "--version" in result.out


def test_score_help_shows_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "score", "--help")
    assert result.code == 0 and result.err == ""
    command = typer.main.get_command(app).commands["score"]  # type: ignore[attr-defined]
    for param in command.params:
        if param.param_type_name == "option":
            assert param.opts[0] in result.out, f"{param.opts[0]} missing from score --help"


def test_inspect_help(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "inspect", "--help")
    assert result.code == 0 and result.err == ""
    assert "--label" in result.out and "--pred" in result.out


def test_every_command_and_option_has_help() -> None:
    """sqlite-utils' rule: a command or an option without help text is a failing test."""
    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    assert set(commands) >= {"score", "inspect"}
    missing = [f"xent {' '.join(p.opts)}" for p in group.params
               if p.param_type_name == "option" and not (p.help or "").strip()]
    for name, command in commands.items():
        if not (command.help or "").strip():
            missing.append(f"xent {name} (the command itself)")
        for param in command.params:
            text = getattr(param, "help", None) or ""
            if not text.strip():
                missing.append(f"xent {name} {' '.join(param.opts)}")
    assert missing == [], f"no help text: {missing}"


# --------------------------------------------------------------------------------------------
# JSON reports of every layout, checked against scikit-learn


def test_multiclass_csv_json(capsys: pytest.CaptureFixture[str], wide_csv: Path, data: Data) -> None:
    result = run_cli(capsys, "score", wide_csv, "--format", "json")
    assert result.code == 0, result.err
    assert result.err == ""
    report = load_json(result.out)
    check_report_shape(report, len(data.labels), list(CLASSES))
    check_cross_entropy(report, data)
    assert report["inputs"] == [str(wide_csv)]
    assert report["signature"] == DEFAULT_SIGNATURE
    assert report["layout"] == {
        "target": "label", "label_column": "label", "target_columns": None,
        "pred_columns": ["p_cat", "p_dog", "p_bird"], "classes": ["cat", "dog", "bird"],
        "scale": "probs", "weight_column": None, "group_columns": [],
    }


def test_json_is_stable_across_runs(capsys: pytest.CaptureFixture[str], wide_csv: Path) -> None:
    first = run_cli(capsys, "score", wide_csv, "-f", "json")
    second = run_cli(capsys, "score", wide_csv, "-f", "json")
    assert first.code == second.code == 0
    assert first.out == second.out


def test_list_column_parquet_with_classes(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          data: Data) -> None:
    path = write_list_parquet(tmp_path / "animals.parquet", data, ("a", "b", "c"))
    result = run_cli(capsys, "score", path, "--classes", "a,b,c", "--format", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    check_report_shape(report, len(data.labels), ["a", "b", "c"])
    check_cross_entropy(report, data)
    assert report["layout"]["pred_columns"] == ["probs"]
    assert report["layout"]["label_column"] == "label"


def test_binary_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, size=40)
    y = rng.integers(0, 2, size=40)
    y[:2] = [0, 1]
    path = tmp_path / "churn.csv"
    path.write_text("label,p\n" + "".join(f"{int(k)},{float(v)!r}\n" for k, v in zip(y, p, strict=True)))
    result = run_cli(capsys, "score", path, "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    check_report_shape(report, 40, ["0", "1"])
    assert report["layout"]["pred_columns"] == ["p"]
    assert report["metrics"]["cross_entropy"] == pytest.approx(log_loss(y, p), rel=RTOL)
    two_column = Data(y, np.column_stack([1 - p, p]))
    check_cross_entropy(report, two_column)


def test_integer_labels_wide_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     data: Data) -> None:
    """Integer labels 0..K-1 are positions when the class names (cat, dog, bird) are not
    integers."""
    columns: dict[str, Any] = {"label": pa.array(data.labels, pa.int64())}
    for k, name in enumerate(CLASSES):
        columns[name] = pa.array(data.probs[:, k], pa.float64())
    path = tmp_path / "positions.parquet"
    pq.write_table(pa.table(columns), path)
    result = run_cli(capsys, "score", path, "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    check_report_shape(report, len(data.labels), list(CLASSES))
    check_cross_entropy(report, data)
    assert report["layout"]["pred_columns"] == list(CLASSES)


def test_stdin_csv_subprocess(wide_csv: Path, data: Data) -> None:
    result = run_proc("score", "-", "--format", "json", stdin=wide_csv.read_bytes())
    assert result.code == 0, result.err
    assert result.err == ""
    report = load_json(result.out)
    check_report_shape(report, len(data.labels), list(CLASSES))
    check_cross_entropy(report, data)


def test_stdin_parquet_subprocess(tmp_path: Path, data: Data) -> None:
    path = write_list_parquet(tmp_path / "animals.parquet", data)
    result = run_proc("score", "-", "--classes", ",".join(CLASSES), "--format", "json",
                      stdin=path.read_bytes())
    assert result.code == 0, result.err
    report = load_json(result.out)
    check_report_shape(report, len(data.labels), list(CLASSES))
    check_cross_entropy(report, data)


# --------------------------------------------------------------------------------------------
# Table, CSV and Markdown


def test_table_format(capsys: pytest.CaptureFixture[str], wide_csv: Path, data: Data) -> None:
    result = run_cli(capsys, "score", wide_csv)
    assert result.code == 0, result.err
    assert result.err == ""
    out = result.out
    for name in CLASSES:
        assert name in out
    assert "nats" in out
    assert DEFAULT_SIGNATURE in out
    assert f"{expected_ce(data):.4f}" in out
    assert "\x1b[" not in out  # no colour when stdout is not a terminal


def test_table_precision(capsys: pytest.CaptureFixture[str], wide_csv: Path, data: Data) -> None:
    result = run_cli(capsys, "score", wide_csv, "--precision", "6")
    assert result.code == 0, result.err
    assert f"{expected_ce(data):.6f}" in result.out


def test_table_base_2_prints_bits(capsys: pytest.CaptureFixture[str], wide_csv: Path,
                                  data: Data) -> None:
    result = run_cli(capsys, "score", wide_csv, "--base", "2")
    assert result.code == 0, result.err
    assert "bits" in result.out
    assert "nats" not in result.out
    assert f"{expected_ce(data) / math.log(2):.4f}" in result.out


def test_json_base_2(capsys: pytest.CaptureFixture[str], wide_csv: Path, data: Data) -> None:
    result = run_cli(capsys, "score", wide_csv, "--base", "2", "-f", "json")
    assert result.code == 0, result.err
    report = load_json(result.out)
    assert report["unit"] == "bits"
    assert "|base:2|" in report["signature"]
    ce_nats = expected_ce(data)
    assert report["metrics"]["cross_entropy"] == pytest.approx(ce_nats / math.log(2), rel=RTOL)
    assert report["metrics"]["perplexity"] == pytest.approx(math.exp(ce_nats), rel=RTOL)


@pytest.mark.parametrize("fmt", ["json", "table", "csv", "markdown"])
def test_output_file(capsys: pytest.CaptureFixture[str], wide_csv: Path, tmp_path: Path,
                     fmt: str) -> None:
    target = tmp_path / f"report.{fmt}"
    written = run_cli(capsys, "score", wide_csv, "-f", fmt, "-o", target)
    assert written.code == 0, written.err
    assert written.out == ""
    printed = run_cli(capsys, "score", wide_csv, "-f", fmt)
    assert target.read_text(encoding="utf-8") == printed.out
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".xent-")]  # no temp left


def test_csv_format(capsys: pytest.CaptureFixture[str], wide_csv: Path, data: Data) -> None:
    result = run_cli(capsys, "score", wide_csv, "--format", "csv")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "scope,class,metric,value"
    rows = list(csv.DictReader(io.StringIO(result.out)))
    overall = {r["metric"]: r["value"] for r in rows if r["scope"] == "overall" and r["class"] == ""}
    assert set(overall) == METRIC_KEYS
    assert float(overall["cross_entropy"]) == pytest.approx(expected_ce(data), rel=RTOL)
    per_class = [r for r in rows if r["scope"] == "overall" and r["class"] != ""]
    assert {r["class"] for r in per_class} == set(CLASSES)
    assert len(per_class) == len(CLASSES) * (len(PER_CLASS_KEYS) - 1)


def test_markdown_format(capsys: pytest.CaptureFixture[str], wide_csv: Path, data: Data) -> None:
    result = run_cli(capsys, "score", wide_csv, "--format", "markdown")
    assert result.code == 0, result.err
    table_lines = [line for line in result.out.splitlines() if line.startswith("|")]
    assert len(table_lines) >= 2 + len(CLASSES)
    assert any(set(line) <= set("|-: ") for line in table_lines)  # a header separator row
    assert f"{expected_ce(data):.4f}" in result.out
    for name in CLASSES:
        assert name in result.out


# --------------------------------------------------------------------------------------------
# Pipes


@pytest.fixture
def big_report_input(tmp_path: Path) -> Path:
    """Few rows but 3,000 classes: a JSON report of ~1 MB, far more than a pipe buffer."""
    wide = make_data(n_rows=8, n_classes=3000, seed=2)
    return write_list_parquet(tmp_path / "wide.parquet", wide, tuple(str(k) for k in range(3000)))


def test_broken_pipe_head_is_quiet(big_report_input: Path) -> None:
    """``xent score FILE --format json | head -c 10``: the reader takes 10 bytes and goes away
    while xent is still writing. It ends quietly: no traceback, no message, no gate-failed code.
    (The reader is this test rather than head(1), whose buffering differs between systems.)"""
    xent = subprocess.Popen([sys.executable, "-m", "xentcli", "score", str(big_report_input),
                             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env())
    assert xent.stdout is not None and xent.stderr is not None
    first = xent.stdout.read(10)
    xent.stdout.close()
    err = xent.stderr.read().decode("utf-8", "replace")
    code = xent.wait(timeout=60)
    xent.stderr.close()
    assert first == b'{\n  "schem'
    assert "Traceback" not in err
    assert err == ""
    assert code in (0, 141, -13)  # quiet success, or killed by SIGPIPE like a C tool


def test_closed_stdout_is_quiet(big_report_input: Path) -> None:
    """The reader is gone before the first write: still no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "xentcli", "score", str(big_report_input),
                               "-f", "json"], stdout=write_end, stderr=subprocess.PIPE, timeout=60,
                              env=clean_env())
    finally:
        os.close(write_end)
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err
    assert err == ""
    assert proc.returncode in (0, 141, -13)


def test_fast_exit_writes_everything(big_report_input: Path, tmp_path: Path) -> None:
    """The command ends with os._exit (no interpreter teardown): a ~1 MB report read slowly
    through a pipe still arrives whole, and a failed gate still writes its line and exits 1.
    Oracle: the JSON parses and holds all 3,000 classes; the exit codes of SPEC section 6."""
    xent = subprocess.Popen([sys.executable, "-m", "xentcli", "score", str(big_report_input),
                             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env())
    assert xent.stdout is not None and xent.stderr is not None
    parts = []
    while chunk := xent.stdout.read(4096):  # slower than xent writes: the pipe fills up
        parts.append(chunk)
    err = xent.stderr.read()
    assert xent.wait(timeout=60) == 0, err
    xent.stdout.close()
    xent.stderr.close()
    report = load_json(b"".join(parts).decode("utf-8"))
    assert len(report["per_class"]) == 3000
    gated = run_proc("score", big_report_input, "-f", "json", "-o", tmp_path / "r.json",
                     "--fail-if", "cross_entropy > 0")
    assert gated.code == 1
    assert gated.err.startswith("gate failed: cross_entropy > 0 (value ")
    assert load_json((tmp_path / "r.json").read_text())["passed"] is False


TUNING_PROBE = """
import gc
from xentcli.console import tune_process
tune_process()
import numpy  # noqa: F401  (OpenBLAS starts its threads here)
from threadpoolctl import threadpool_info
print([pool["num_threads"] for pool in threadpool_info() if pool["internal_api"] == "openblas"])
print(gc.get_threshold()[0])
"""


@pytest.mark.parametrize(("preset", "expected"), [(None, [1]), ("2", [2])])
def test_console_process_tuning(preset: str | None, expected: list[int]) -> None:
    """The console command asks OpenBLAS for one thread (its idle threads spin on the core the
    reader needs), but a user's OPENBLAS_NUM_THREADS stands; and it collects cyclic garbage
    every 50,000 new objects, not 700. Oracle: threadpoolctl's view of the loaded OpenBLAS and
    gc.get_threshold() in a fresh interpreter."""
    env = clean_env()
    env.pop("OPENBLAS_NUM_THREADS", None)
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    out = subprocess.run([sys.executable, "-c", TUNING_PROBE], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    assert out.split("\n")[:2] == [str(expected), "50000"]


GC_ORDER_PROBE = """
import gc, sys

class Probe:  # notes the collector's threshold when typer is first imported
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            print(gc.get_threshold()[0])
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, Probe())
sys.argv = ["xent", "--version"]
from xentcli.console import run
run()
"""


def test_console_command_tunes_the_process_before_importing_typer() -> None:
    """The installed ``xent`` enters through xentcli.console, which sets the collector's threshold
    before typer (the first heavy import) is imported: typer's import alone ran 21 collections
    at the default. Oracles: the threshold seen by an import hook when typer is looked for, in a
    fresh interpreter, and the entry point as the installed package's metadata records it."""
    from importlib.metadata import entry_points

    out = subprocess.run([sys.executable, "-c", GC_ORDER_PROBE], capture_output=True, text=True,
                         env=clean_env(), timeout=60, check=True).stdout
    assert out.split("\n")[:2] == ["50000", f"xent {__version__}"]
    (script,) = entry_points(group="console_scripts", name="xent")
    assert script.value == "xentcli.console:run"


POOL_PROBE = """
import pyarrow as pa
from xentcli.cli import use_jemalloc_pool
use_jemalloc_pool()
print(pa.default_memory_pool().backend_name)
"""


@pytest.mark.parametrize("preset", [None, "system"])
def test_commands_read_with_jemalloc_unless_the_user_chose(preset: str | None) -> None:
    """Commands that read data have pyarrow allocate from jemalloc where it is built in (mimalloc
    gave the reader fresh huge pages to zero), but a user's ARROW_DEFAULT_MEMORY_POOL stands.
    Oracle: pyarrow's own name for its default pool, in a fresh interpreter."""
    import pyarrow as pa

    env = clean_env()
    env.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    if preset is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = preset
    out = subprocess.run([sys.executable, "-c", POOL_PROBE], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout.strip()
    if preset is not None:
        assert out == preset
    elif "jemalloc" in pa.supported_memory_backends():
        assert out == "jemalloc"
    else:
        assert out == pa.default_memory_pool().backend_name
