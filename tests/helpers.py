"""Helpers shared by the test modules: running the CLI (in-process and as a real process), strict
JSON, small file writers and the location checks of a data error.

A plain module, imported as ``from helpers import ...``: ``tests/`` has no ``__init__.py``, so
pytest's default ``prepend`` import mode puts ``tests/`` on ``sys.path`` for the test modules.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xentcli.cli import main

# --------------------------------------------------------------------------------------------
# Running the CLI


@dataclass
class Result:
    """One run of ``xent``: exit code, stdout, stderr (and, for ``run_main(record_warnings=True)``,
    the Python warnings raised during the run)."""

    code: int
    out: str
    err: str
    warned: list[str] = field(default_factory=list)  # a real process would print them

    @property
    def report(self) -> dict[str, Any]:
        return load_json(self.out)

    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def _exit_code(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> Result:
    """``xent ARGS`` in-process through ``cli.main``, which ends every run in SystemExit; stdout
    and stderr captured apart by ``capsys`` (anything printed before is dropped)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def run_main(*args: object, record_warnings: bool = False) -> Result:
    """``xent ARGS`` in-process with stdout and stderr redirected to strings (no fixture needed,
    e.g. inside a Hypothesis test). With ``record_warnings`` every Python warning raised during
    the run is recorded in ``Result.warned`` instead of going anywhere else."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        caught = stack.enter_context(warnings.catch_warnings(record=True)) if record_warnings else None
        if record_warnings:
            warnings.simplefilter("always")
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
    return Result(code, out.getvalue(), err.getvalue(), [str(w.message) for w in caught or []])


def clean_env() -> dict[str, str]:
    """The environment of a user's shell for a real ``xent`` process: no colour, UTF-8 standard
    streams, and stdout buffered as Python does by default (PYTHONUNBUFFERED changes how a
    broken pipe surfaces)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}


def xent_command(*args: object) -> list[str]:
    """The argv of ``python -m xentcli ARGS``."""
    return [sys.executable, "-m", "xentcli", *map(str, args)]


def run_proc(*args: object, stdin: bytes | None = None, cwd: Path | None = None,
             command: list[str] | None = None) -> Result:
    """``python -m xentcli ARGS`` (or ``command ARGS``) as a real process, in ``clean_env()``."""
    argv = [*command, *map(str, args)] if command else xent_command(*args)
    proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=60, env=clean_env(), cwd=cwd)
    return Result(proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8"))


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"JSON holds the non-standard constant {name}")


def load_json(text: str) -> dict[str, Any]:
    """Strict JSON, as SPEC section 4 promises: NaN, Infinity and -Infinity are refused."""
    data = json.loads(text, parse_constant=_reject_constant)
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------------------------
# Writing files


def write_csv(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    """A CSV with exactly these lines (header first), written byte for byte."""
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def write_parquet(path: Path, columns: dict[str, Any], **kwargs: Any) -> Path:
    """``columns`` as one Parquet table; ``kwargs`` go to ``pq.write_table``."""
    pq.write_table(pa.table(columns), path, **kwargs)
    return path


# --------------------------------------------------------------------------------------------
# Message checks


def check_location(err: str, path: Path, *, row: int | None = None, line: int | None = None,
                   column: str | None = None, value: str | None = None) -> str:
    """The message ``err`` names the file and every part of the location given."""
    assert path.name in err, f"file name {path.name!r} not in: {err}"
    if row is not None:
        assert re.search(rf"\brow {row}\b", err), f"row {row} not in: {err}"
    if line is not None:
        assert re.search(rf"\bline {line}\b", err), f"line {line} not in: {err}"
    if column is not None:
        assert column in err, f"column {column!r} not in: {err}"
    if value is not None:
        assert value in err, f"value {value!r} not in: {err}"
    return err
