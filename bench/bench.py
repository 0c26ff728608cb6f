"""Benchmark ``xent score`` against DuckDB, Polars, pandas+scikit-learn and a bare pyarrow decode.

The script generates synthetic prediction files (Parquet and CSV, cached in ``--dir``), then runs
every contender on the same file, each in its own fresh subprocess, interleaved and repeated::

    for file in files:
        for r in range(repeat):
            for contender in contenders, starting r places later:
                read the file into the page cache
                run it in a new process; wall time around it; peak RSS from os.wait4

and prints, per file, the median and minimum wall time, the ratio to xent, the child's own compute
time, the peak RSS and the cross-entropy each contender computed (checked against xent's).

Before that it byte-compiles xentcli (``python -m compileall``, as pip does when it installs a
wheel; an editable install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module
from source in every run), and times start-up once: ``xent --version``, ``xent --help`` and
``xent score`` on a 10-row file against ``python -c "import pyarrow.parquet"``. At the end it
prints the performance targets with PASS / MISS.

Usage::

    python bench/bench.py --rows 10000000 --classes 10 --repeat 3
    python bench/bench.py --rows 10000000 --rows 50000000 --only parquet --keep
    python bench/bench.py --only startup --startup-repeat 15

The measuring parent imports nothing but the standard library: on Linux a child's ``ru_maxrss``
is at least its parent's high-water RSS at spawn time (``exec`` folds the old address space's peak
into it), so a parent that had loaded numpy would put a floor of its own size under every number.
Data generation runs as this same script in a fresh process (``bench.py --generate FILE ...``),
and every non-xent contender as ``contenders.py NAME FILE K`` beside it, which imports only what
that one contender needs. See bench/README.md for what each contender computes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from contenders import class_names, duckdb_sql, file_format

#: Rows per generated block, and so per Parquet row group.
ROW_GROUP = 1_000_000
#: Standard deviation of the random logits; with the class bias below, K=10 gives CE ~1.75 nats.
LOGIT_SCALE = 1.25
#: Bump when the generator changes, so cached files from an older generator are not reused.
GEN_VERSION = 2
#: Generated float32 rows must sum to 1 within this.
ROW_SUM_TOL = 1e-6
#: Binary is the smallest problem.
MIN_CLASSES = 2
#: pandas+sklearn peak memory per (row, class) cell, rounded up (5.1 GiB measured at 10M x 10).
PANDAS_BYTES_PER_CELL = 70
#: Skip pandas+sklearn when its estimate exceeds this share of MemAvailable (avoid the OOM killer).
PANDAS_MEM_SHARE = 0.8
#: Relative CE difference to xent above which a warning is printed.
CE_RTOL = 1e-6
#: Rows of the start-up section's Parquet file: reading it costs next to nothing.
STARTUP_ROWS = 10
#: The start-up reference: what any pyarrow-based Parquet reader has to import.
STARTUP_REFERENCE = "import pyarrow.parquet"
#: Libraries ``xent --help`` and ``xent --version`` should not import.
HEAVY_MODULES = ("numpy", "pandas", "pyarrow")

# Performance targets (medians of wall time; peak RSS is the maximum over repeats).
#: Parquet: xent median / contender median at most this.
PARQUET_RATIO_LIMITS = {"duckdb": 0.8, "polars": 1.0, "pyarrow-decode": 1.5}
#: CSV: xent median / contender median at most this.
CSV_RATIO_LIMITS = {"duckdb": 1.0}
#: xent's peak RSS on any Parquet file, in bytes (ru_maxrss is KiB).
RSS_LIMIT_BYTES = 300e6
#: xent's peak RSS, largest Parquet size over smallest, at most this.
RSS_FLAT_LIMIT = 1.10
#: xent score on the 10-row file, median over the reference's median, at most this.
STARTUP_RATIO_LIMIT = 1.5
#: The sizes the speed targets are stated for (the performance issue): at other sizes the same
#: ratios are printed as "info", not counted.
TARGET_ROWS = {"parquet": 10_000_000, "csv": 2_000_000}

THIS_FILE = Path(__file__).resolve()
REPO_ROOT = THIS_FILE.parent.parent
CONTENDERS_FILE = THIS_FILE.parent / "contenders.py"

PARQUET_CONTENDERS = ("xent", "duckdb", "polars", "pandas+sklearn", "pyarrow-decode")
CSV_CONTENDERS = ("xent", "duckdb", "polars", "pyarrow-decode")
ALL_CONTENDERS = tuple(dict.fromkeys(PARQUET_CONTENDERS + CSV_CONTENDERS))
PACKAGES = ("xentcli", "numpy", "pyarrow", "duckdb", "polars", "pandas", "scikit-learn", "scipy")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Data generation (runs in its own process: `bench.py --generate FILE`)
# --------------------------------------------------------------------------------------------


def gen_block(seed: int, index: int, n: int, k: int) -> Any:
    """Rows ``[index*ROW_GROUP, index*ROW_GROUP + n)`` of the synthetic data set, as a pa.Table.

    Each block has its own seeded generator, so a file of N rows is exactly the first N rows of
    any larger file with the same seed and class count (the CSV is a prefix of the Parquet file).
    """
    import numpy as np
    import pyarrow as pa

    # Separate streams for logits and label draws, so a shorter block is a prefix of a longer one.
    rng_logits = np.random.default_rng([seed, index, 0])
    rng_labels = np.random.default_rng([seed, index, 1])
    bias = np.linspace(0.5, -0.5, k)  # mildly imbalanced classes
    z = rng_logits.standard_normal((n, k)) * LOGIT_SCALE + bias
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)  # softmax, normalized in float64
    # Labels drawn from the predicted distribution: a calibrated model, CE ~ E[H(q)].
    cum = np.cumsum(z, axis=1)
    u = rng_labels.random(n) * cum[:, -1]
    idx = np.minimum((cum < u[:, None]).sum(axis=1), k - 1)
    probs = np.ascontiguousarray(z.T, dtype=np.float32)  # (classes, rows): each column contiguous
    worst = float(np.abs(probs.sum(axis=0, dtype=np.float64) - 1.0).max())
    if worst > ROW_SUM_TOL:
        raise AssertionError(f"generated float32 row sum off from 1 by {worst:.3g}")
    names = class_names(k)
    columns: dict[str, Any] = {f"p_{c}": pa.array(probs[j]) for j, c in enumerate(names)}
    columns["label"] = pa.array(names, type=pa.string()).take(pa.array(idx))
    return pa.table(columns)


def open_writer(tmp: Path, csv: bool, schema: Any) -> Any:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if csv:
        options = pacsv.WriteOptions(quoting_style="none")
        return pacsv.CSVWriter(str(tmp), schema, write_options=options)
    return pq.ParquetWriter(str(tmp), schema, compression="snappy")


def write_blocks(tmp: Path, rows: int, k: int, seed: int, csv: bool) -> None:
    """Stream the data set into ``tmp`` one ROW_GROUP block at a time (bounded memory)."""
    nblocks = -(-rows // ROW_GROUP)
    writer: Any = None
    try:
        for i in range(nblocks):
            block = gen_block(seed, i, min(ROW_GROUP, rows - i * ROW_GROUP), k)
            if writer is None:
                writer = open_writer(tmp, csv, block.schema)
            if csv:
                writer.write_table(block)
            else:
                writer.write_table(block, row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()


def generate_main(path: Path, rows: int, k: int, seed: int) -> int:
    """Write the data set to a temporary name, renamed to ``path`` only when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_blocks(tmp, rows, k, seed, csv=file_format(path) == "csv")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return 0


def data_path(directory: Path, rows: int, k: int, seed: int, suffix: str) -> Path:
    return directory / f"xent-bench-{rows}r-{k}c-s{seed}-v{GEN_VERSION}.{suffix}"


def ensure_file(path: Path, rows: int, k: int, seed: int) -> bool:
    """Generate ``path`` in a child process unless cached; return True if generated now."""
    if path.exists():
        log(f"using cached {path} ({path.stat().st_size / 2**20:,.1f} MiB)")
        return False
    log(f"generating {path} ({rows:,} rows) ...")
    t0 = time.perf_counter()
    cmd = [sys.executable, str(THIS_FILE), "--generate", str(path), "--rows", str(rows)]
    cmd += ["--classes", str(k), "--seed", str(seed)]
    if subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False).returncode != 0:
        raise SystemExit(f"error: generating {path} failed (see above)")
    size = path.stat().st_size / 2**20
    log(f"generated {path.name} ({size:,.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    return True


def warm_cache(path: Path) -> None:
    """Read the file once into the page cache, through a small reused buffer."""
    buf = bytearray(1 << 20)
    with path.open("rb", buffering=0) as f:
        while f.readinto(buf):
            pass


# --------------------------------------------------------------------------------------------
# Parent: run children, measure, report
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    file: str
    format: str
    contender: str
    repeat: int
    ok: bool
    returncode: int
    wall_s: float
    maxrss_kib: int
    compute_s: float | None = None
    import_s: float | None = None
    rows: int | None = None
    cross_entropy: float | None = None
    entropy_pred: float | None = None
    error: str | None = None


@dataclass
class ChildOutcome:
    returncode: int
    wall_s: float
    maxrss_kib: int
    stdout: str
    stderr: str
    timed_out: bool = False


def wait_child(proc: subprocess.Popen[bytes], timeout: float | None) -> tuple[int, int, bool]:
    """Reap ``proc`` with os.wait4; return (exit code, its ru_maxrss in KiB, timed out)."""
    done = threading.Event()
    killed = threading.Event()

    def kill() -> None:
        if not done.is_set():  # not reaped yet, so the pid is still this child's
            killed.set()
            os.kill(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # e.g. Ctrl-C: do not leave the child running
        os.kill(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
        proc.returncode = -signal.SIGKILL
        raise
    finally:
        done.set()
        if timer is not None:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
    return proc.returncode, usage.ru_maxrss, killed.is_set()


def run_child(cmd: Sequence[str], timeout: float | None) -> ChildOutcome:
    """Run ``cmd``: wall time around the whole process, peak RSS from its own rusage."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO_ROOT)
        rc, maxrss_kib, timed_out = wait_child(proc, timeout)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return ChildOutcome(
            returncode=rc,
            wall_s=wall,
            maxrss_kib=maxrss_kib,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=timed_out,
        )


def contender_cmd(name: str, path: Path, k: int, xent_cmd: Sequence[str]) -> list[str]:
    if name == "xent":
        return [*xent_cmd, "score", str(path), "--format", "json", "-q"]
    return [sys.executable, str(CONTENDERS_FILE), name, str(path), str(k)]


def failure_reason(outcome: ChildOutcome) -> str:
    rc = outcome.returncode
    if outcome.timed_out:
        return "timed out (--timeout)"
    if rc == -signal.SIGKILL:
        return "killed by SIGKILL (out of memory?)"
    return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"


def parse_outcome(name: str, outcome: ChildOutcome) -> tuple[dict[str, Any], str | None]:
    """Pull rows/CE/entropy out of the child's stdout; return (values, error)."""
    if outcome.returncode != 0:
        return {}, failure_reason(outcome)
    try:
        data = json.loads(outcome.stdout)
    except json.JSONDecodeError as exc:
        return {}, f"stdout is not JSON ({exc})"
    if name != "xent":
        return data, None
    try:
        metrics = data["metrics"]
        values = {"rows": data["rows"]["scored"], "cross_entropy": metrics["cross_entropy"]}
        return {**values, "entropy_pred": metrics["entropy_pred"]}, None
    except (KeyError, TypeError) as exc:
        return {}, f"xent JSON lacks {exc}"


def new_run(file: str, fmt: str, name: str, repeat: int, outcome: ChildOutcome, error: str | None,
            values: dict[str, Any] | None = None) -> Run:
    fields = ("compute_s", "import_s", "rows", "cross_entropy", "entropy_pred")
    return Run(
        file=file,
        format=fmt,
        contender=name,
        repeat=repeat,
        ok=error is None,
        returncode=outcome.returncode,
        wall_s=outcome.wall_s,
        maxrss_kib=outcome.maxrss_kib,
        error=error,
        **{key: (values or {}).get(key) for key in fields},
    )


def make_run(path: Path, name: str, repeat: int, outcome: ChildOutcome) -> Run:
    values, error = parse_outcome(name, outcome)
    return new_run(str(path), file_format(path), name, repeat, outcome, error, values)


def log_run(run: Run, outcome: ChildOutcome, cmd: Sequence[str], total: int) -> None:
    """One line per run; on failure the command and the end of its stderr. ``total``: repeats."""
    status = "ok" if run.ok else f"FAILED ({run.error})"
    log(
        f"  repeat {run.repeat + 1}/{total} {run.contender:<20} {run.wall_s:8.2f} s "
        f"{run.maxrss_kib / 1024:9.1f} MiB  {status}"
    )
    if not run.ok:
        log(f"  {run.contender} failed; command: {shlex.join(cmd)}")
        lines = outcome.stderr.strip().splitlines()[-15:]
        if lines:
            log("  stderr (last lines):\n" + "\n".join(f"    {line}" for line in lines))
        log(f"  {run.contender}: skipping its remaining repeats")


def skip_reason(name: str, rows: int, k: int) -> str | None:
    """Why ``name`` should not run on this file, if it would not fit in memory."""
    available = read_proc_field("/proc/meminfo", "MemAvailable")
    if name != "pandas+sklearn" or available is None:
        return None
    need = rows * k * PANDAS_BYTES_PER_CELL
    have = int(available.split()[0]) * 1024
    if need <= PANDAS_MEM_SHARE * have:
        return None
    return f"skipped: needs ~{need / 2**30:.0f} GiB, {have / 2**30:.0f} GiB available"


@dataclass(frozen=True)
class Target:
    """One benchmarked file and the contenders that run on it."""

    path: Path
    rows: int
    classes: int
    contenders: tuple[str, ...]


def bench_file(target: Target, args: argparse.Namespace) -> tuple[list[Run], dict[str, str]]:
    """Run every contender once per repeat, interleaved; each repeat starts one contender later
    in the order (so nobody always runs right after pandas+sklearn, whose 5 GiB can push the
    file out of the page cache), and the file is read into the page cache before every run.

    Returns the runs and, per contender skipped for lack of memory, the reason.
    """
    path, rows, k, contenders = target.path, target.rows, target.classes, target.contenders
    log(f"\n[{file_format(path)}] {path.name}: warming page cache")
    warm_cache(path)
    skipped = {c: why for c in contenders if (why := skip_reason(c, rows, k)) is not None}
    for name, why in skipped.items():
        log(f"  {name}: {why}")
    runs: list[Run] = []
    failed: set[str] = set(skipped)
    for r in range(args.repeat):
        for name in contenders[r % len(contenders):] + contenders[: r % len(contenders)]:
            if name in failed:
                continue
            warm_cache(path)
            cmd = contender_cmd(name, path, k, args.xent_cmd)
            outcome = run_child(cmd, args.timeout)
            run = make_run(path, name, r, outcome)
            runs.append(run)
            log_run(run, outcome, cmd, args.repeat)
            if not run.ok:
                failed.add(name)
            elif run.rows is not None and run.rows != rows:
                log(f"  WARNING: {name} counted {run.rows:,} rows, expected {rows:,}")
    return runs, skipped


def fmt_num(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else format(x, spec) + suffix


def median_or_none(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summary_row(
    name: str, rs: Sequence[Run], xent_median: float | None, skipped: str | None
) -> tuple[str, ...]:
    ok = [r for r in rs if r.ok]
    med = median_or_none([r.wall_s for r in ok])
    ratio = med / xent_median if med is not None and xent_median else None
    ce = next((r.cross_entropy for r in ok if r.cross_entropy is not None), None)
    status = skipped or ("ok" if len(ok) == len(rs) else f"FAILED: {rs[-1].error}")
    return (
        name,
        fmt_num(med, ".3f"),
        fmt_num(min((r.wall_s for r in ok), default=None), ".3f"),
        fmt_num(ratio, ".2f", "x"),
        fmt_num(median_or_none([r.compute_s for r in ok if r.compute_s is not None]), ".3f"),
        fmt_num(max((r.maxrss_kib / 1024 for r in ok), default=None), ",.0f"),
        fmt_num(ce, ".10f"),
        str(len(ok)),
        status,
    )


def print_table(table: Sequence[tuple[str, ...]]) -> None:
    """First column left-aligned, last (status) free-form, the rest right-aligned."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for j, row in enumerate(table):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:-1], widths[1:-1], strict=True)]
        print("  ".join([*cells, row[-1]]).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


HEADER = (
    "contender",
    "median s",
    "min s",
    "vs xent",
    "compute s",
    "peak RSS MiB",
    "cross-entropy",
    "runs",
    "status",
)


def report(target: Target, runs: list[Run], skipped: dict[str, str]) -> None:
    path, rows, k, contenders = target.path, target.rows, target.classes, target.contenders
    size = path.stat().st_size / 2**20
    by_name = {name: [r for r in runs if r.contender == name] for name in contenders}
    xent_median = median_or_none([r.wall_s for r in by_name.get("xent", []) if r.ok])
    print(f"\n== {file_format(path)}: {path} ({rows:,} rows, {k} classes, {size:,.1f} MiB) ==")
    lines = [summary_row(c, by_name[c], xent_median, skipped.get(c)) for c in contenders]
    print_table([HEADER, *lines])
    for key in ("cross_entropy", "entropy_pred"):
        check_metric(by_name, key)
    sys.stdout.flush()


def check_metric(by_name: dict[str, list[Run]], key: str) -> None:
    """Warn when a contender's ``key`` differs from xent's (or DuckDB's, if xent failed)."""
    values = {
        name: [(r.repeat, v) for r in rs if r.ok and (v := getattr(r, key)) is not None]
        for name, rs in by_name.items()
    }
    ref_name = "xent" if values.get("xent") else "duckdb"
    if not values.get(ref_name):
        print(f"{key} check: no reference (xent and duckdb both failed or were not run)")
        return
    ref = values[ref_name][0][1]
    worst = 0.0
    for name, pairs in values.items():
        for repeat, v in pairs:
            rel = abs(v - ref) / abs(ref) if ref else abs(v)
            worst = max(worst, rel)
            if rel > CE_RTOL:
                print(
                    f"WARNING: {name} (repeat {repeat + 1}) {key} {v!r} differs from "
                    f"{ref_name}'s {ref!r} by {rel:.2e} relative (> {CE_RTOL:g})"
                )
    note = "" if ref_name == "xent" else " (xent gave none)"
    print(f"{key} check vs {ref_name}{note}: largest relative difference {worst:.2e}")


def read_proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def package_version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(xent_cmd: Sequence[str]) -> dict[str, Any]:
    mem_kib = read_proc_field("/proc/meminfo", "MemTotal")
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": read_proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gib": int(mem_kib.split()[0]) / 2**20 if mem_kib else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "xent_cmd": list(xent_cmd),
        "versions": {pkg: package_version(pkg) for pkg in PACKAGES},
    }


def print_machine(info: dict[str, Any]) -> None:
    mem = f"{info['memory_gib']:.1f} GiB" if info["memory_gib"] else "? GiB"
    print(
        f"machine: {info['cpu_model']}; {info['cpu_count']} CPUs ({info['cpus_usable']} usable);"
        f" {mem} RAM; {info['platform']}"
    )
    print(f"python {info['python']} ({info['python_executable']})")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"xent command: {shlex.join(info['xent_cmd'])}")


def print_legend() -> None:
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "\nmedian s / min s: parent's wall time around the whole child process (interpreter\n"
        "  start-up and imports included, the same for everybody); vs xent: median / xent's\n"
        "  median (above 1 = slower than xent); vs reference (start-up): median / the\n"
        "  reference's median; compute s: the child's own timing after its imports (xent\n"
        "  does not report one); peak RSS: the child's ru_maxrss from os.wait4, max over\n"
        f"  repeats (floor: this parent's own {floor:.0f} MiB high-water mark, which Linux\n"
        "  carries into every child; a value at the floor is not a measurement)."
    )


# --------------------------------------------------------------------------------------------
# Byte-compile xent before timing it
# --------------------------------------------------------------------------------------------


def default_xent_cmd() -> list[str]:
    """The ``xent`` command that pip installed beside this interpreter, as a user runs it; else
    ``python -m xentcli``, whose runpy start costs ~7 ms more (median of 40 interleaved runs)."""
    script = shutil.which("xent", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "xentcli"]


def xent_package_dir() -> str:
    """xentcli's directory, found by a child: the measuring parent must not import it."""
    code = "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('xentcli').origin))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    package = proc.stdout.strip()
    if not Path(package).is_dir():  # compileall would say "Can't list" and still exit 0
        raise OSError(f"not a directory: {package!r}")
    return package


def byte_compile_xent() -> str:
    """Write xentcli's .pyc files, as pip does when it installs a wheel; return what was done.

    Installed editable, xent runs from its source tree; with PYTHONDONTWRITEBYTECODE=1 Python
    never writes the cache there, so every run would compile every xent module again, a cost
    that numpy, pyarrow and duckdb (installed with their .pyc files) do not pay.
    """
    cmd: list[str] = []
    try:
        package = xent_package_dir()
        cmd = [sys.executable, "-m", "compileall", "-q", package]
        subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        output = getattr(exc, "stderr", None) or getattr(exc, "stdout", None) or ""
        lines = output.strip().splitlines()
        detail = lines[-1] if lines else str(exc)
        what = shlex.join(cmd) if cmd else "locating xentcli"
        log(f"WARNING: could not byte-compile xentcli ({what}: {detail}); timing it anyway")
        return f"failed: {detail}"
    unset = "" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "not "
    log(
        f"byte-compiled xentcli ({shlex.join(cmd)}), as pip does when it installs a wheel, so "
        f"xent's runs do not compile it from source (PYTHONDONTWRITEBYTECODE is {unset}set)"
    )
    return f"compiled {package}"


# --------------------------------------------------------------------------------------------
# Start-up: xent --version, --help and a 10-row score against `python -c "import pyarrow.parquet"`
# --------------------------------------------------------------------------------------------

REFERENCE_LABEL = "reference"
SCORE_LABEL = f"xent score ({STARTUP_ROWS} rows)"


@dataclass
class StartupBench:
    path: Path
    runs: list[Run]
    #: Per flag (``--help``, ``--version``), the heavy libraries it imports; None: check failed.
    imports: dict[str, list[str] | None]


def startup_cmds(small: Path, xent_cmd: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(label, command) for each start-up measurement, the reference first."""
    return [
        (REFERENCE_LABEL, [sys.executable, "-c", STARTUP_REFERENCE]),
        ("xent --version", [*xent_cmd, "--version"]),
        ("xent --help", [*xent_cmd, "--help"]),
        (SCORE_LABEL, [*xent_cmd, "score", str(small), "--format", "json", "-q"]),
    ]


def make_startup_run(label: str, path: Path, repeat: int, outcome: ChildOutcome) -> Run:
    if label == SCORE_LABEL:
        run = make_run(path, "xent", repeat, outcome)
        if run.ok and run.rows != STARTUP_ROWS:
            run.ok, run.error = False, f"scored {run.rows} rows, expected {STARTUP_ROWS}"
        return replace(run, format="startup", contender=label)
    error = None if outcome.returncode == 0 else failure_reason(outcome)
    return new_run("", "startup", label, repeat, outcome, error)


def parse_importtime(stderr: str) -> list[str]:
    """The HEAVY_MODULES (top-level names) in ``-X importtime`` output.

    Lines look like ``import time:   self |  cumulative |   module``; the module is the last field.
    """
    found: set[str] = set()
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            top = line.rsplit("|", 1)[-1].strip().split(".")[0]
            if top in HEAVY_MODULES:
                found.add(top)
    return [m for m in HEAVY_MODULES if m in found]


def heavy_imports(flag: str) -> list[str] | None:
    """Which HEAVY_MODULES ``python -m xentcli FLAG`` imports; None if it did not run."""
    cmd = [sys.executable, "-X", "importtime", "-m", "xentcli", flag]
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    if proc.returncode != 0:
        log(f"WARNING: {shlex.join(cmd)} exited with status {proc.returncode}")
        return None
    return parse_importtime(proc.stderr)


def bench_startup(small: Path, args: argparse.Namespace) -> StartupBench:
    """Each start-up command once per repeat, interleaved, each in a fresh process."""
    log(f"\n[startup] {small.name}: warming page cache")
    warm_cache(small)
    runs: list[Run] = []
    failed: set[str] = set()
    for r in range(args.startup_repeat):
        for label, cmd in startup_cmds(small, args.xent_cmd):
            if label in failed:
                continue
            outcome = run_child(cmd, args.timeout)
            run = make_startup_run(label, small, r, outcome)
            runs.append(run)
            log_run(run, outcome, cmd, args.startup_repeat)
            if not run.ok:
                failed.add(label)
    imports = {flag: heavy_imports(flag) for flag in ("--help", "--version")}
    return StartupBench(path=small, runs=runs, imports=imports)


def imports_text(modules: list[str] | None) -> str:
    if modules is None:
        return "unknown (the check failed)"
    return ", ".join(modules) if modules else "none of " + ", ".join(HEAVY_MODULES)


STARTUP_HEADER = ("command", "median s", "min s", "vs reference", "peak RSS MiB", "runs", "status")


def startup_row(label: str, rs: Sequence[Run], ref_median: float | None) -> tuple[str, ...]:
    ok = [r for r in rs if r.ok]
    med = median_or_none([r.wall_s for r in ok])
    ratio = med / ref_median if med is not None and ref_median else None
    return (
        label,
        fmt_num(med, ".3f"),
        fmt_num(min((r.wall_s for r in ok), default=None), ".3f"),
        fmt_num(ratio, ".2f", "x"),
        fmt_num(max((r.maxrss_kib / 1024 for r in ok), default=None), ",.0f"),
        str(len(ok)),
        "ok" if len(ok) == len(rs) else f"FAILED: {rs[-1].error}",
    )


def report_startup(bench: StartupBench, args: argparse.Namespace) -> None:
    labels = [label for label, _ in startup_cmds(bench.path, args.xent_cmd)]
    by_label = {label: [r for r in bench.runs if r.contender == label] for label in labels}
    ref_median = median_or_none([r.wall_s for r in by_label[REFERENCE_LABEL] if r.ok])
    print(
        f"\n== start-up: {args.startup_repeat} repeats, interleaved; "
        f'reference = python -c "{STARTUP_REFERENCE}" =='
    )
    print_table([STARTUP_HEADER, *(startup_row(lb, by_label[lb], ref_median) for lb in labels)])
    for flag, modules in bench.imports.items():
        print(f"{flag} imports: {imports_text(modules)}")
    sys.stdout.flush()


def startup_result(bench: StartupBench, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "file": str(bench.path),
        "rows": STARTUP_ROWS,
        "reference": f'python -c "{STARTUP_REFERENCE}"',
        "commands": {label: cmd for label, cmd in startup_cmds(bench.path, args.xent_cmd)},
        "runs": [asdict(r) for r in bench.runs],
        "heavy_imports": bench.imports,
    }


# --------------------------------------------------------------------------------------------
# Targets: PASS / MISS against the performance issue's goals
# --------------------------------------------------------------------------------------------


@dataclass
class FileBench:
    target: Target
    runs: list[Run]
    skipped: dict[str, str]
    size_bytes: int


@dataclass
class Goal:
    target: str
    value: float | None
    measured: str
    limit: float
    limit_text: str
    status: str  # PASS, MISS or n/a
    # a time ratio's value over each side's fastest run instead of its median: what the two
    # compare at in the machine's quietest moments (information; the status is the median's)
    fastest: float | None = None


def goal(text: str, value: float | None, limit: float, fmt: Callable[[float], str],
         fastest: float | None = None) -> Goal:
    """A target row: PASS when ``value <= limit``; n/a when there is no value."""
    status = "n/a" if value is None else ("PASS" if value <= limit else "MISS")
    measured = "n/a" if value is None else fmt(value)
    return Goal(text, value, measured, limit, fmt(limit), status, fastest)


def times(x: float) -> str:
    return f"{x:.2f}x"


def megabytes(x: float) -> str:
    return f"{x / 1e6:,.0f} MB"


def all_ok(runs: Sequence[Run], name: str) -> list[Run] | None:
    """``name``'s runs, or None if it did not run or any run failed."""
    rs = [r for r in runs if r.contender == name]
    return rs if rs and all(r.ok for r in rs) else None


def wall_median(runs: Sequence[Run], name: str) -> float | None:
    rs = all_ok(runs, name)
    return statistics.median(r.wall_s for r in rs) if rs else None


def wall_min(runs: Sequence[Run], name: str) -> float | None:
    rs = all_ok(runs, name)
    return min(r.wall_s for r in rs) if rs else None


def peak_rss_bytes(runs: Sequence[Run], name: str) -> float | None:
    rs = all_ok(runs, name)
    return max(r.maxrss_kib for r in rs) * 1024.0 if rs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def file_goals(fb: FileBench) -> list[Goal]:
    fmt = file_format(fb.target.path)
    where = f"{fmt} {fb.target.rows:,} rows"
    limits = CSV_RATIO_LIMITS if fmt == "csv" else PARQUET_RATIO_LIMITS
    xent, xent_fastest = wall_median(fb.runs, "xent"), wall_min(fb.runs, "xent")
    goals = [
        goal(f"{where}: xent <= {limit:.1f}x {name}", ratio(xent, wall_median(fb.runs, name)), limit,
             times, fastest=ratio(xent_fastest, wall_min(fb.runs, name)))
        for name, limit in limits.items()
    ]
    if fb.target.rows != TARGET_ROWS[fmt]:  # the speed targets are stated for one size
        goals = [replace(g, status="info") if g.status != "n/a" else g for g in goals]
    if fmt == "parquet":
        rss = peak_rss_bytes(fb.runs, "xent")
        text = f"{where}: xent peak RSS <= {megabytes(RSS_LIMIT_BYTES)}"
        goals.append(goal(text, rss, RSS_LIMIT_BYTES, megabytes))
    return goals


def flat_rss_goal(parquet: Sequence[FileBench]) -> Goal | None:
    """Largest Parquet size's xent peak RSS over the smallest's, if two or more sizes ran."""
    if len(parquet) < 2:
        return None
    small = min(parquet, key=lambda fb: fb.target.rows)
    large = max(parquet, key=lambda fb: fb.target.rows)
    text = f"parquet: xent peak RSS flat, {large.target.rows:,} / {small.target.rows:,} rows"
    value = ratio(peak_rss_bytes(large.runs, "xent"), peak_rss_bytes(small.runs, "xent"))
    return goal(f"{text} <= {RSS_FLAT_LIMIT:.2f}x", value, RSS_FLAT_LIMIT, times)


def startup_goals(bench: StartupBench) -> list[Goal]:
    score = wall_median(bench.runs, SCORE_LABEL)
    value = ratio(score, wall_median(bench.runs, REFERENCE_LABEL))
    text = f"start-up: {SCORE_LABEL} <= {STARTUP_RATIO_LIMIT:.1f}x reference"
    goals = [goal(text, value, STARTUP_RATIO_LIMIT, times)]
    for flag, modules in bench.imports.items():
        text = f"start-up: xent {flag} imports none of {', '.join(HEAVY_MODULES)}"
        if modules is None:
            goals.append(Goal(text, None, "n/a", 0.0, "none", "n/a"))
        else:
            status = "MISS" if modules else "PASS"
            goals.append(Goal(text, float(len(modules)), ", ".join(modules) or "none", 0.0, "none", status))
    return goals


def collect_goals(startup: StartupBench | None, files: Sequence[FileBench]) -> list[Goal]:
    """In the order things ran: start-up, each Parquet size, flat RSS, CSV."""
    goals = startup_goals(startup) if startup is not None else []
    parquet = [fb for fb in files if file_format(fb.target.path) == "parquet"]
    for fb in parquet:
        goals += file_goals(fb)
    flat = flat_rss_goal(parquet)
    if flat is not None:
        goals.append(flat)
    for fb in files:
        if file_format(fb.target.path) == "csv":
            goals += file_goals(fb)
    return goals


def print_goals(goals: Sequence[Goal]) -> None:
    print("\n== targets ==")
    if not goals:
        print("(nothing measured)")
        return
    rows = [(g.target, g.measured, "-" if g.fastest is None else times(g.fastest), g.limit_text, g.status)
            for g in goals]
    print_table([("target", "measured", "fastest", "limit", "result"), *rows])
    counts = {s: sum(g.status == s for g in goals) for s in ("PASS", "MISS", "n/a", "info")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if any(g.fastest is not None for g in goals):
        print("measured: the ratio of the medians, which decides the result; fastest: the same\n"
              "  ratio over each one's fastest run, for information: how the two compare when the\n"
              "  machine is quiet (the medians also reflect how much each suffers when it is not).")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark xent against DuckDB, Polars, pandas+sklearn and pyarrow.",
    )
    p.add_argument(
        "--rows",
        type=int,
        action="append",
        metavar="N",
        help="Parquet rows; repeat for several sizes (default 10000000)",
    )
    p.add_argument(
        "--csv-rows",
        type=int,
        default=2_000_000,
        metavar="N",
        help="rows of the CSV file (default 2000000)",
    )
    p.add_argument("--classes", type=int, default=10, metavar="K", help="classes (default 10)")
    p.add_argument("--repeat", type=int, default=3, help="runs per contender (default 3)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    p.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "xent-bench",
        help="where generated files are cached (default /tmp/xent-bench)",
    )
    p.add_argument(
        "--only",
        choices=("parquet", "csv", "startup"),
        help="benchmark only this format, or only start-up",
    )
    p.add_argument(
        "--startup-repeat",
        type=int,
        default=15,
        metavar="N",
        help="runs per start-up command (default 15)",
    )
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="do not byte-compile xentcli before timing it",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the files this run generated (default: delete them at the end; "
        "files found already cached are never deleted)",
    )
    p.add_argument(
        "--xent-cmd",
        default=None,
        metavar="CMD",
        help="command that runs xent, split like a shell would (default: the xent command installed "
        "beside this python, else '<this python> -m xentcli')",
    )
    p.add_argument(
        "--contenders",
        default=None,
        metavar="LIST",
        help=f"comma list, a subset of: {','.join(ALL_CONTENDERS)}",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="kill a contender after S seconds (counted as failed)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="save raw results")
    p.add_argument("--print-sql", action="store_true", help="print the DuckDB SQL used")
    p.add_argument("--generate", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.rows = args.rows or [10_000_000]
    if min([*args.rows, args.csv_rows]) <= 0:
        p.error("row counts must be positive")
    if args.classes < MIN_CLASSES:
        p.error("--classes must be at least 2")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.startup_repeat < 1:
        p.error("--startup-repeat must be at least 1")
    args.xent_cmd = shlex.split(args.xent_cmd) if args.xent_cmd else default_xent_cmd()
    if args.contenders:
        args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
        unknown = sorted(set(args.contenders) - set(ALL_CONTENDERS))
        if unknown:
            p.error(f"unknown contenders: {', '.join(unknown)}")


def plan_targets(args: argparse.Namespace) -> list[Target]:
    """Every file to benchmark, in order: the Parquet sizes, then the CSV."""
    specs: list[tuple[int, str, tuple[str, ...]]] = []
    if args.only in (None, "parquet"):
        specs += [(n, "parquet", PARQUET_CONTENDERS) for n in dict.fromkeys(args.rows)]
    if args.only in (None, "csv"):
        specs.append((args.csv_rows, "csv", CSV_CONTENDERS))
    k, wanted = args.classes, args.contenders
    return [
        Target(
            path=data_path(args.dir, n, k, args.seed, suffix),
            rows=n,
            classes=k,
            contenders=tuple(c for c in cs if wanted is None or c in wanted),
        )
        for n, suffix, cs in specs
    ]


def startup_file(args: argparse.Namespace) -> Path | None:
    """The start-up section's 10-row file, or None when the section does not run."""
    if args.only not in (None, "startup"):
        return None
    if args.contenders is not None and "xent" not in args.contenders:
        log("start-up section skipped: xent is not in --contenders")
        return None
    return data_path(args.dir, STARTUP_ROWS, args.classes, args.seed, "parquet")


def file_result(fb: FileBench) -> dict[str, Any]:
    target = fb.target
    return {
        "file": str(target.path),
        "format": file_format(target.path),
        "rows": target.rows,
        "classes": target.classes,
        "bytes": fb.size_bytes,
        "duckdb_sql": duckdb_sql(str(target.path), class_names(target.classes)),
        "runs": [asdict(r) for r in fb.runs],
        "skipped": fb.skipped,
    }


def benchmark(args: argparse.Namespace) -> tuple[StartupBench | None, list[FileBench]]:
    """Generate what is missing, time start-up, then every file's contenders; print the tables."""
    targets = plan_targets(args)
    small = startup_file(args)
    wanted = [(t.path, t.rows) for t in targets] + ([(small, STARTUP_ROWS)] if small else [])
    generated: list[Path] = []
    startup: StartupBench | None = None
    files: list[FileBench] = []
    try:
        for path, rows in wanted:
            if ensure_file(path, rows, args.classes, args.seed):
                generated.append(path)
        if small is not None:
            startup = bench_startup(small, args)
            report_startup(startup, args)
        for t in targets:
            runs, skipped = bench_file(t, args)
            report(t, runs, skipped)
            files.append(FileBench(t, runs, skipped, t.path.stat().st_size))
            if args.print_sql and "duckdb" in t.contenders:
                print(f"\nDuckDB SQL:\n{duckdb_sql(str(t.path), class_names(t.classes))}", flush=True)
        if startup is not None or files:
            print_legend()
    finally:
        if not args.keep and generated:
            for path in generated:
                path.unlink(missing_ok=True)
            log(f"removed {len(generated)} generated file(s); use --keep to cache them")
    return startup, files


def save_json(out: Path, args: argparse.Namespace, info: dict[str, Any], results: dict[str, Any]) -> None:
    settings = {
        "rows": args.rows,
        "csv_rows": args.csv_rows,
        "classes": args.classes,
        "repeat": args.repeat,
        "startup_repeat": args.startup_repeat,
        "startup_rows": STARTUP_ROWS,
        "only": args.only,
        "seed": args.seed,
        "row_group_rows": ROW_GROUP,
        "logit_scale": LOGIT_SCALE,
        "generator_version": GEN_VERSION,
        "parent_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    payload = {"machine": info, "settings": settings, **results}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    log(f"raw results written to {out}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    if args.generate is not None:
        return generate_main(args.generate, args.rows[0], args.classes, args.seed)
    info = machine_info(args.xent_cmd)
    print_machine(info)
    print(
        f"settings: rows={args.rows} csv_rows={args.csv_rows} classes={args.classes} "
        f"repeat={args.repeat} startup_repeat={args.startup_repeat} seed={args.seed} "
        f"only={args.only or 'all'} dir={args.dir}",
        flush=True,
    )
    compiled = "skipped (--no-compile)" if args.no_compile else byte_compile_xent()
    startup, files = benchmark(args)
    goals = collect_goals(startup, files)
    print_goals(goals)
    if args.json is not None:
        results = {
            "byte_compile": compiled,
            "startup": startup_result(startup, args) if startup is not None else None,
            "files": [file_result(fb) for fb in files],
            "targets": [asdict(g) for g in goals],
        }
        save_json(args.json, args, info, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
