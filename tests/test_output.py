"""Where the report goes and how it reads: -o onto links, pipes and devices, standard output that
is closed, full or not UTF-8, CSV and Markdown that keep odd class names intact, and usage errors
as one message."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import clean_env, load_json, run_cli, run_proc, write_csv, xent_command
from sklearn.metrics import log_loss

from xentcli import compare as compare_mod
from xentcli.gates import failure_lines
from xentcli.report.model import GateOutcome
from xentcli.report.render import format_number

RTOL = 1e-12
Capture = pytest.CaptureFixture[str]


@pytest.fixture()
def small_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "p.csv", ["label,p_a,p_b", "a,0.8,0.2", "b,0.3,0.7", "a,0.4,0.6"])


SMALL_CE = log_loss([0, 1, 0], [[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])


# --------------------------------------------------------------------------------------------
# -o


def test_output_through_a_link_writes_the_file_it_names(tmp_path: Path, small_csv: Path,
                                                        capsys: Capture) -> None:
    """The link stays a link (a rename onto it used to replace it with a plain file)."""
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old", encoding="utf-8")
    link.symlink_to(target.name)
    result = run_cli(capsys, "score", small_csv, "-f", "json", "-o", link)
    assert result.code == 0, result.err
    assert link.is_symlink()
    assert load_json(target.read_text(encoding="utf-8"))["metrics"]["cross_entropy"] == \
        pytest.approx(SMALL_CE, rel=RTOL)


def test_output_through_a_dangling_link_creates_its_file(tmp_path: Path, small_csv: Path,
                                                         capsys: Capture) -> None:
    link = tmp_path / "link.json"
    link.symlink_to("later.json")
    assert run_cli(capsys, "score", small_csv, "-f", "json", "-o", link).code == 0
    assert link.is_symlink() and (tmp_path / "later.json").is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_output_to_a_named_pipe_goes_down_the_pipe(tmp_path: Path, small_csv: Path, capsys: Capture) -> None:
    pipe = tmp_path / "report.pipe"
    os.mkfifo(pipe)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text(encoding="utf-8")))
    reader.start()
    result = run_cli(capsys, "score", small_csv, "-f", "json", "-o", pipe)
    reader.join(10)
    assert result.code == 0, result.err
    assert load_json(received[0])["metrics"]["cross_entropy"] == pytest.approx(SMALL_CE, rel=RTOL)
    assert not pipe.is_file()  # still a pipe


def test_output_dash_is_standard_output(tmp_path: Path, small_csv: Path, capsys: Capture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "score", small_csv, "-f", "json", "-o", "-")
    assert result.code == 0, result.err
    assert load_json(result.out)["metrics"]["cross_entropy"] == pytest.approx(SMALL_CE, rel=RTOL)
    assert not Path("-").exists()


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_output_that_cannot_be_written_is_refused_before_reading(tmp_path: Path, capsys: Capture,
                                                                 where: str) -> None:
    """Refused up front: the input here does not even exist, and the -o problem is what is said."""
    output = tmp_path / "nowhere" / "r.json" if where == "missing folder" else tmp_path
    result = run_cli(capsys, "score", tmp_path / "not-there.csv", "-o", output)
    assert result.code == 2
    assert f"-o {output}" in result.err and "not-there" not in result.err


def test_an_existing_report_keeps_its_mode(tmp_path: Path, small_csv: Path, capsys: Capture) -> None:
    out = tmp_path / "r.json"
    out.write_text("{}", encoding="utf-8")
    out.chmod(0o640)
    assert run_cli(capsys, "score", small_csv, "-f", "json", "-o", out).code == 0
    assert out.stat().st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------------------------
# standard output


def _proc(args: list[object], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(xent_command(*args), capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_a_locale_without_the_characters_still_gets_the_report(small_csv: Path, encoding: str) -> None:
    """The table's box characters (and any class name) are written as UTF-8 whatever the
    locale; it used to end in an internal error with nothing written."""
    env = {**clean_env(), "PYTHONIOENCODING": encoding}
    for fmt in ("table", "json"):
        proc = _proc(["score", small_csv, "-f", fmt], env=env)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout.decode("utf-8")
        assert f"{SMALL_CE:.4f}" in text if fmt == "table" else load_json(text)["unit"] == "nats"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file descriptors")
def test_closed_standard_output(small_csv: Path, tmp_path: Path) -> None:
    """Started with fd 1 closed: with -o the run is fine, without it one message and exit 2
    (a traceback and exit 1 before)."""
    out = tmp_path / "r.json"
    closed = ["bash", "-c", 'exec 1>&-; exec "$@"', "xent", *map(str, xent_command())]
    with_o = subprocess.run([*closed, "score", str(small_csv), "-f", "json", "-o", str(out)],
                            capture_output=True, timeout=60, env=clean_env())
    assert with_o.returncode == 0 and with_o.stderr == b""
    assert out.is_file()
    without = subprocess.run([*closed, "score", str(small_csv)], capture_output=True, timeout=60,
                             env=clean_env())
    assert without.returncode == 2
    assert without.stderr.decode().splitlines()[0] == \
        "xent: error: cannot write the report: standard output is closed"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_on_standard_output_is_a_message(small_csv: Path) -> None:
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(xent_command("score", small_csv, "-f", "json"), stdout=full,
                              stderr=subprocess.PIPE, timeout=60, env=clean_env())
    assert proc.returncode == 2
    assert "cannot write the report to standard output (No space left on device)" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()


# --------------------------------------------------------------------------------------------
# CSV


def test_csv_quotes_a_carriage_return(tmp_path: Path, capsys: Capture) -> None:
    """A class name with a carriage return: every CSV row still has four fields, and the name
    comes back whole (the csv module quotes only the line end it writes, "\\n")."""
    path = tmp_path / "cr.csv"
    path.write_bytes(b'label,p_a,"p_b\rc"\na,0.6,0.4\n"b\rc",0.3,0.7\n')
    result = run_cli(capsys, "score", path, "-f", "csv")
    assert result.code == 0, result.err
    rows = list(csv.reader(io.StringIO(result.out, newline="")))
    assert {len(r) for r in rows} == {4}
    assert {r[1] for r in rows if r[0] == "overall" and r[1]} == {"a", "b\rc"}


def test_csv_tells_an_infinite_loss_from_an_undefined_value(tmp_path: Path, capsys: Capture) -> None:
    """Oracle: −log 0 = inf with --eps 0. The class with no rows has an undefined CE (empty)."""
    path = write_csv(tmp_path / "inf.csv", ["label,p_a,p_b,p_c", "a,0,1,0", "b,0.3,0.7,0"])
    result = run_cli(capsys, "score", path, "--eps", "0", "-f", "csv")
    assert result.code == 0, result.err
    cells = {(r["scope"], r["class"], r["metric"]): r["value"]
             for r in csv.DictReader(io.StringIO(result.out))}
    with np.errstate(divide="ignore"):
        assert cells["overall", "", "cross_entropy"] == "inf" == str(-np.log(np.float64(0.0)))
    assert cells["overall", "c", "cross_entropy"] == ""
    assert float(cells["overall", "b", "cross_entropy"]) == pytest.approx(-math.log(0.7), rel=RTOL)


def test_csv_names_its_unit_signature_and_inputs(small_csv: Path, capsys: Capture) -> None:
    result = run_cli(capsys, "score", small_csv, "--base", "2", "-f", "csv")
    as_json = load_json(run_cli(capsys, "score", small_csv, "--base", "2", "-f", "json").out)
    rows = list(csv.reader(io.StringIO(result.out)))
    assert ["report", "", "unit", "bits"] in rows
    assert ["report", "", "signature", as_json["signature"]] in rows
    assert ["report", "", "input", as_json["inputs"][0]] in rows


# --------------------------------------------------------------------------------------------
# table and Markdown


def test_table_is_not_cut_when_not_a_terminal(tmp_path: Path, capsys: Capture) -> None:
    """A 1,100-character class name: rows used to end in '…' at a fixed width of 1,000."""
    name = "a" * 1100
    path = write_csv(tmp_path / "long.csv", [f"label,p_{name},p_b", f"{name},0.7,0.3", "b,0.4,0.6"])
    result = run_cli(capsys, "score", path)
    assert result.code == 0, result.err
    assert "…" not in result.out
    class_rows = [line for line in result.out.splitlines() if line.lstrip().startswith(name)]
    assert class_rows and all(f"{0.5:.4f}" in row for row in class_rows)  # share, on the same line


def test_the_mark_caption_only_with_a_marked_class(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "one.csv", ["label,p_a,p_b", "a,0.7,0.3", "a,0.4,0.6"])
    assert "◀" not in run_cli(capsys, "score", path).out  # class b has no rows: nothing to mark
    two = write_csv(tmp_path / "two.csv", ["label,p_a,p_b", "a,0.7,0.3", "b,0.4,0.6"])
    assert run_cli(capsys, "score", two).out.count("◀") == 2  # the marked row and the caption


def test_the_header_says_how_many_classes_it_does_not_name(tmp_path: Path, capsys: Capture) -> None:
    names = [f"k{j}" for j in range(13)]
    probs = ",".join(["0.5", "0.5"] + ["0"] * 11)
    path = write_csv(tmp_path / "many.csv", ["label," + ",".join(f"p_{n}" for n in names), f"k0,{probs}"])
    out = run_cli(capsys, "score", path).out
    assert "13: k0, k1" in out and "k11 and 1 more (all in the per-class table)" in out


def test_numbers_at_the_ends_of_precision() -> None:
    assert format_number(0.6, 0) == "6e-01"
    assert format_number(1.0973, 0) == "1"
    assert format_number(1e304, 4) == "1.0000e+304"
    assert format_number(123456.5, 1) == "123456.5"


def test_markdown_keeps_class_names_as_text(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "md.csv", ["label,p_a*b,p_<b>c", "a*b,0.6,0.4", "<b>c,0.3,0.7"])
    out = run_cli(capsys, "score", path, "-f", "markdown", "--fail-if", "per_class.accuracy[a*b] < 0.5").out
    assert "| \\<b>c |" in out
    assert "| **a\\*b** (highest CE) |" in out
    assert "| per_class.accuracy[a\\*b] < 0.5 |" in out


def test_a_failed_gate_is_one_line_on_stderr() -> None:
    outcome = GateOutcome('per_class.accuracy["a\nb"] < 1', 0.5, 1.0, False)
    assert failure_lines([outcome]) == \
        ['gate failed: per_class.accuracy["a\\nb"] < 1 (value 0.5000, threshold 1.0000)']


# --------------------------------------------------------------------------------------------
# usage


def test_a_usage_error_is_one_message_and_a_hint(small_csv: Path) -> None:
    result = run_proc("score", small_csv, "--no-such-flag")
    assert result.code == 2
    assert result.err.splitlines() == ["xent: error: No such option: --no-such-flag",
                                       "hint: see xent score --help"]


def test_compare_refuses_a_baseline_gate_before_reading(tmp_path: Path, capsys: Capture) -> None:
    missing = tmp_path / "not-there.csv"
    result = run_cli(capsys, "compare", missing, missing, "--fail-if", "cross_entropy > baseline")
    assert result.code == 2
    assert "compare gates the difference new − base, which has no baseline" in result.err


def test_score_refuses_a_baseline_gate_without_baseline_before_reading(tmp_path: Path,
                                                                     capsys: Capture) -> None:
    result = run_cli(capsys, "score", tmp_path / "not-there.csv", "--fail-if", "cross_entropy > baseline")
    assert result.code == 2 and "needs --baseline FILE.json" in result.err


@pytest.mark.parametrize("flag", [["--seed", "-1"], ["--bootstrap", "1000001"]])
def test_compare_bootstrap_settings_out_of_range_are_usage_errors(small_csv: Path, capsys: Capture,
                                                                  flag: list[str]) -> None:
    result = run_cli(capsys, "compare", small_csv, small_csv, *flag)
    assert result.code == 2, result.err


def test_bootstrap_in_batches_draws_what_one_batch_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicates resampled in batches (bounded memory) draw the same counts: the differences
    agree to the rounding of the matrix products (BLAS sums in another order per batch size)."""
    rng = np.random.default_rng(3)
    n, k = 500, 3
    rows = {side: {"loss": rng.random(n), "pred_entropy": rng.random(n), "correct": rng.random(n) < 0.5,
                   "target": rng.integers(0, k, n)} for side in ("base", "new")}
    rows["new"]["target"] = rows["base"]["target"]
    whole = compare_mod.bootstrap_diffs(rows["base"], rows["new"], k, 300, 7)
    monkeypatch.setattr(compare_mod, "REPLICATE_BATCH", 64)
    batched = compare_mod.bootstrap_diffs(rows["base"], rows["new"], k, 300, 7)
    assert set(whole) == set(batched)
    for key in whole:
        np.testing.assert_allclose(whole[key], batched[key], rtol=1e-12, atol=1e-15)


def test_inspect_shows_readable_names_as_they_are(tmp_path: Path, capsys: Capture) -> None:
    path = write_csv(tmp_path / "u.csv", ["label,p_ü,p_日本", "ü,0.6,0.4"])
    out = run_cli(capsys, "inspect", path).out
    assert "'p_ü'" in out and "'日本'" in out


# --------------------------------------------------------------------------------------------
# from the review of the above


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_output_to_dev_stdout_into_a_closed_pipe_is_quiet(small_csv: Path) -> None:
    """`-o /dev/stdout | head` ends as `| head` does without -o: quietly, with the gates' code."""
    script = f'{" ".join(map(str, xent_command()))} score {small_csv} -o /dev/stdout {{}} | head -c 0'
    for gate, code in (("", 0), ("--fail-if 'accuracy < 2'", 1)):
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", script.format(gate)], capture_output=True,
                              timeout=60, env=clean_env())
        assert proc.returncode == code, proc.stderr
        assert b"error" not in proc.stderr  # only a failed gate's line


@pytest.mark.parametrize("path", ["", "newname/"])
def test_output_that_is_no_file_name_is_refused(tmp_path: Path, capsys: Capture, path: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """-o '' failed after the run; -o newname/ wrote a file called newname."""
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "score", tmp_path / "not-there.csv", "-o", path)
    assert result.code == 2 and "not a file name" in result.err
    assert not (tmp_path / "newname").exists()


def test_compare_tables_show_an_infinite_loss_as_inf(tmp_path: Path, capsys: Capture) -> None:
    """Oracle: −log 0 = inf with --eps 0 (compare's table and Markdown said null)."""
    base = write_csv(tmp_path / "b.csv", ["label,p_a,p_b", "a,0,1", "b,0.3,0.7"])
    new = write_csv(tmp_path / "n.csv", ["label,p_a,p_b", "a,0.5,0.5", "b,0.3,0.7"])
    for fmt in ("table", "markdown"):
        out = run_cli(capsys, "compare", base, new, "--eps", "0", "--bootstrap", "0", "-f", fmt).out
        line = next(x for x in out.splitlines() if "cross-entropy (log loss)" in x)
        new_ce = f"{(-math.log(0.5) - math.log(0.7)) / 2:.4f}"
        assert re.search(rf"\binf\W+{new_ce}\W+-inf\b", line), line  # base, new, diff; no interval


def test_bare_xent_prints_the_help_only() -> None:
    result = run_proc()
    assert result.code == 2 and "Usage: xent" in result.out and "error" not in result.err


def test_a_missing_option_value_points_at_the_command_help(small_csv: Path) -> None:
    result = run_proc("score", small_csv, "--precision")
    assert result.code == 2
    assert result.err.splitlines() == ["xent: error: Option '--precision' requires an argument.",
                                       "hint: see xent score --help"]


def test_the_default_signatures_are_as_before() -> None:
    """Baselines written before the signature kept every digit of --eps stay valid for the
    common settings (their signatures, byte for byte)."""
    from xentcli.io.layout import LayoutRequest
    from xentcli.pipeline import ScoreOptions

    tail = "scale:probs|sum_tol:{}|renorm:no|weights:no|invalid:error"
    assert ScoreOptions().signature() == "xent:0.1.0|base:e|eps:2.2e-16|" + tail.format("0.001")
    assert ScoreOptions(eps=1e-15, sum_tol=0.01, base="2").signature() == \
        "xent:0.1.0|base:2|eps:1e-15|" + tail.format("0.01")
    assert ScoreOptions(layout=LayoutRequest(scale="logits"), eps=0.0).signature() == \
        "xent:0.1.0|base:e|eps:0|" + tail.format("0.001").replace("probs", "logits")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
@pytest.mark.parametrize("args", [["--help"], ["score", "--help"]])
def test_help_into_a_closed_pipe_is_quiet(args: list[str]) -> None:
    """`xent score --help | head -1` exited 1 (typer's and rich's own closed-pipe handling)."""
    script = " ".join([*map(str, xent_command()), *args]) + " | head -c 0"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, timeout=60,
                          env=clean_env())
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr


def test_failed_gate_lines_follow_precision(small_csv: Path, capsys: Capture) -> None:
    """Oracle: the accuracy of the three rows, 2/3 (the lines ignored --precision)."""
    result = run_cli(capsys, "score", small_csv, "--fail-if", "accuracy < 2", "--precision", "2")
    assert result.code == 1
    assert f"gate failed: accuracy < 2 (value {2 / 3:.2f}, threshold 2.00)" in result.err
