"""The contenders other than xent, each run by bench.py in a fresh process::

    python bench/contenders.py NAME FILE K

prints one JSON object: rows, cross_entropy, entropy_pred, import_s and compute_s.

This file imports nothing at start but ``json``, ``sys``, ``time`` and ``typing`` (which every
contender's library imports anyway), and each contender imports only its own libraries inside
its function: a contender's process pays what a user's script doing the same work would, no
more. (Run as ``bench.py --run-one``, it used to pay 15-20 ms of the bench's own imports,
``importlib.metadata`` mostly, that xent's process did not.)
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

ChildResult = dict[str, Any]

#: float64 machine epsilon: xent's default ``--eps`` (q is clipped up to it before the log).
EPS = 2.220446049250313e-16


def class_names(k: int) -> list[str]:
    return [f"c{j}" for j in range(k)]


def file_format(path: str | Path) -> str:
    return "csv" if str(path).endswith(".csv") else "parquet"


def duckdb_sql(path: str, classes: Sequence[str]) -> str:
    """One aggregate: mean -ln q(true class) (clipped at eps like xent) and mean -sum(q ln q)."""
    quoted = path.replace("'", "''")
    if file_format(path) == "csv":
        source = f"read_csv('{quoted}', header = true)"
    else:
        source = f"read_parquet('{quoted}')"
    cases = "\n".join(f"      WHEN '{c}' THEN p_{c}" for c in classes)
    entropy = "\n".join(f"      {'' if i == 0 else '+ '}p_{c} * ln(p_{c})" for i, c in enumerate(classes))
    return (
        "SELECT\n"
        "  count(*) AS n,\n"
        "  avg(-ln(greatest(CAST(CASE label\n"
        f"{cases}\n"
        f"    END AS DOUBLE), {EPS!r}))) AS cross_entropy,\n"
        "  avg(-(\n"
        f"{entropy}\n"
        "  )) AS entropy_pred\n"
        f"FROM {source}"
    )


def result(rows: int, ce: float | None, ent: float | None, t0: float, t1: float) -> ChildResult:
    """The child's report; t0 = before its heavy imports, t1 = after them."""
    return {
        "rows": rows,
        "cross_entropy": ce,
        "entropy_pred": ent,
        "import_s": t1 - t0,
        "compute_s": time.perf_counter() - t1,
    }


def run_duckdb(path: str, classes: Sequence[str]) -> ChildResult:
    t0 = time.perf_counter()
    import duckdb

    t1 = time.perf_counter()
    con = duckdb.connect()  # default threads (= cores)
    row = con.execute(duckdb_sql(path, classes)).fetchone()
    assert row is not None
    n, ce, ent = row
    return result(n, ce, ent, t0, t1)


def run_polars(path: str, classes: Sequence[str]) -> ChildResult:
    t0 = time.perf_counter()
    import polars as pl

    t1 = time.perf_counter()
    lf = pl.scan_csv(path) if file_format(path) == "csv" else pl.scan_parquet(path)
    label = pl.col("label")
    chain: Any = pl.when(label == classes[0]).then(pl.col(f"p_{classes[0]}"))
    for c in classes[1:]:
        chain = chain.when(label == c).then(pl.col(f"p_{c}"))
    p_true = chain.cast(pl.Float64).clip(lower_bound=EPS)
    q = [pl.col(f"p_{c}").cast(pl.Float64) for c in classes]
    entropy = -pl.sum_horizontal([x * x.log() for x in q])
    out = lf.select(
        n=pl.len(),
        cross_entropy=(-p_true.log()).mean(),
        entropy_pred=entropy.mean(),
    ).collect(engine="streaming")
    rec = out.row(0, named=True)
    return result(rec["n"], rec["cross_entropy"], rec["entropy_pred"], t0, t1)


def run_pandas_sklearn(path: str, classes: Sequence[str]) -> ChildResult:
    t0 = time.perf_counter()
    import warnings

    import numpy as np
    import pandas as pd
    from scipy.special import entr
    from sklearn.metrics import log_loss

    t1 = time.perf_counter()
    df = pd.read_csv(path) if file_format(path) == "csv" else pd.read_parquet(path)
    # Integer codes, not the strings: on an object array of strings log_loss spends ~85% of its
    # time in np.unique (type_of_target, LabelBinarizer); 51 s instead of ~8 s at 10M rows.
    # Codes 0..K-1 also keep log_loss's sorted-label column order equal to the file's.
    codes = pd.Categorical(df["label"], categories=list(classes)).codes
    probs = df[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)  # (rows, classes)
    with warnings.catch_warnings():
        # float32 rows sum to 1 within ~3e-7, above log_loss's float64 tolerance (sqrt(eps)).
        warnings.filterwarnings("ignore", message=".*do not sum to one.*")
        ce = float(log_loss(codes, probs, labels=np.arange(len(classes))))
    ent = float(entr(probs).sum(axis=1).mean())
    return result(len(df), ce, ent, t0, t1)


def run_pyarrow_decode(path: str, classes: Sequence[str]) -> ChildResult:
    del classes
    t0 = time.perf_counter()
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    t1 = time.perf_counter()
    n = 0
    if file_format(path) == "csv":
        n = pacsv.read_csv(path).num_rows  # whole file, multi-threaded
    else:
        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            n += pf.read_row_group(i).num_rows
    return result(n, None, None, t0, t1)


RUNNERS: dict[str, Callable[[str, Sequence[str]], ChildResult]] = {
    "duckdb": run_duckdb,
    "polars": run_polars,
    "pandas+sklearn": run_pandas_sklearn,
    "pyarrow-decode": run_pyarrow_decode,
}


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3 or argv[0] not in RUNNERS or not argv[2].isdigit():
        print(f"usage: contenders.py {{{','.join(RUNNERS)}}} FILE CLASSES", file=sys.stderr)
        return 2
    name, path, k = argv
    print(json.dumps(RUNNERS[name](path, class_names(int(k)))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
