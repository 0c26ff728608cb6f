"""Where the rows come from: paths, directories and standard input, each with a format."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import BinaryIO

from xentcli.errors import DataError, UsageError, escape_value

FORMATS = ("csv", "tsv", "parquet", "arrow", "jsonl")
COMPRESSIONS = (".gz", ".zst", ".bz2")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
STDIN_NAME = "<stdin>"


@dataclass(frozen=True)
class Source:
    """One input file: ``path`` on disk, ``name`` as the user wrote it, and its ``format``."""

    path: str
    name: str
    format: str


def format_from_suffix(path: str) -> str | None:
    lower = path.lower()
    for compression in COMPRESSIONS:
        if lower.endswith(compression):
            lower = lower[: -len(compression)]
            break
    return _SUFFIXES.get(os.path.splitext(lower)[1])


def sniff_format(head: bytes) -> str:
    """Parquet and Arrow by their magic bytes, anything else is taken as CSV."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "arrow"
    return "csv"


def _spool_stdin(stack: ExitStack, stream: BinaryIO) -> str:
    """Copy standard input to a temporary file: Parquet needs seeking, and one code path for all
    formats keeps memory bounded (the copy streams in 1 MiB blocks)."""
    import tempfile  # only stdin needs it (~2 ms of start-up)

    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="xent-stdin-"))
    path = os.path.join(directory, "stdin")
    with open(path, "wb") as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
    return path


def _directory_sources(path: str) -> list[Source]:
    files = sorted(
        os.path.join(root, name)
        for root, _dirs, names in os.walk(path)
        for name in names
        if format_from_suffix(name) == "parquet" and not name.startswith((".", "_"))
    )
    if not files:
        raise DataError(
            f"{path}: directory holds no Parquet files",
            "a directory is read as a partitioned Parquet dataset (*.parquet, *.pq)",
        )
    return [Source(f, f, "parquet") for f in files]


def resolve_sources(
    args: Sequence[str], input_format: str | None, stack: ExitStack, stdin: BinaryIO | None = None
) -> list[Source]:
    """Turn command-line paths into sources; ``-`` is standard input, spooled and sniffed."""
    if not args:
        raise UsageError("no input files given", "pass one or more files, or - for standard input")
    sources: list[Source] = []
    for arg in args:
        if arg == "-":
            path = _spool_stdin(stack, stdin if stdin is not None else sys.stdin.buffer)
            with open(path, "rb") as head:
                fmt = input_format or sniff_format(head.read(8))
            sources.append(Source(path, STDIN_NAME, fmt))
        elif os.path.isdir(arg):
            sources.extend(_directory_sources(arg))
        elif not os.path.exists(arg):
            raise DataError(f"{escape_value(arg, None)}: no such file", "check the path")
        else:
            guessed = input_format or format_from_suffix(arg)
            if guessed is None:
                raise UsageError(
                    f"{escape_value(arg, None)}: cannot tell the format from the file name",
                    f"name it .csv, .tsv, .parquet, .arrow or .jsonl, or pass --input-format "
                    f"({', '.join(FORMATS)})",
                )
            sources.append(Source(arg, arg, guessed))
    return sources
