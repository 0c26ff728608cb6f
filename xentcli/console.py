"""The ``xent`` console command, as pip installs it and as ``python -m xentcli`` runs it: the
process is tuned before typer, numpy or pyarrow is imported, then :func:`xentcli.cli.run` runs.
A module of its own because importing :mod:`xentcli.cli` imports typer."""

from __future__ import annotations

import gc
import os
from typing import NoReturn

# Python looks for reference cycles every 700 new objects by default. Starting up (typer, numpy,
# pyarrow) makes tens of thousands of objects that all live on, and scoring makes no cycles:
# collecting every 50,000 instead saves ~7 ms of a 0.14 s start-up, ~2 ms of it in typer's import.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_process() -> None:
    """Settings for the console command's own process, made before anything heavy is imported.

    OpenBLAS is asked for one thread unless the user chose a number: loaded with a thread per
    core, it keeps them spinning for a while after numpy's import, on the core that xent's reader
    thread needs, and xent's own BLAS calls are small (10M rows: ~0.02 s faster in all). And
    cyclic garbage is looked for less often (see GC_THRESHOLDS)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.set_threshold(*GC_THRESHOLDS)


def run() -> NoReturn:
    """The console command; it ends the process with the command's exit code."""
    tune_process()
    from xentcli.cli import run as run_cli

    run_cli()
