"""Where the rows come from: paths, directories and standard input, each with a format."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import BinaryIO, NoReturn

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
# compressed standard input, by its magic bytes → the suffix that makes the readers decompress it
_COMPRESSION_MAGIC = {b"\x1f\x8b": ".gz", b"\x28\xb5\x2f\xfd": ".zst", b"BZh": ".bz2"}
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # the directory name of a null partition value
PARTITION_METADATA = {b"xent:partition": b"1"}  # on the field of a column that directory names hold


@dataclass(frozen=True)
class Source:
    """One input file: ``path`` on disk, ``name`` as the user wrote it, and its ``format``."""

    path: str
    name: str
    format: str
    # (key, value) of each hive-style directory (key=value) between a dataset's root and this
    # file: columns of every row, read as text (None: the null partition)
    partitions: tuple[tuple[str, str | None], ...] = ()


def format_from_suffix(path: str) -> str | None:
    lower = path.lower()
    for compression in COMPRESSIONS:
        if lower.endswith(compression):
            lower = lower[: -len(compression)]
            break
    return _SUFFIXES.get(os.path.splitext(lower)[1])


def sniff_format(head: bytes) -> str:
    """Parquet and Arrow by their magic bytes; text as JSON Lines when it starts with ``{``, as
    TSV when its first line has more tabs than commas, else as CSV."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith((b"ARROW1", b"\xff\xff\xff\xff", b"FEA1")):  # FEA1: Feather version 1
        return "arrow"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        return "jsonl"
    first_line = text.split(b"\n", 1)[0]
    if first_line.count(b"\t") > first_line.count(b","):
        return "tsv"
    return "csv"


_FORMAT_NAMES = {"parquet": "Parquet", "arrow": "Arrow IPC (Feather)", "jsonl": "JSON Lines"}


def _compression(head: bytes) -> str | None:
    """The suffix of the compression whose magic bytes ``head`` starts with (None: none)."""
    return next((suffix for magic, suffix in _COMPRESSION_MAGIC.items() if head.startswith(magic)), None)


def check_content(source: Source) -> None:
    """Refuse, by name, a file whose bytes are another format than its suffix says: Parquet or
    gzip named .csv, Parquet named .arrow, JSON Lines named .csv, which the readers would report
    in their own terms ("not UTF-8 text", "Expected to read 827474256 metadata bytes", "no label
    column found"). Only the formats' full signatures count (Parquet's PAR1 at both ends, Feather
    1's FEA1 too), and --input-format skips the check, so a CSV whose header starts "PAR1_id" is
    read as what it is."""
    try:
        with open(source.path, "rb") as f:
            head = f.read(64)
            f.seek(max(os.fstat(f.fileno()).st_size - 4, 0))
            tail = f.read(4)
    except OSError:
        return  # the reader says what is wrong with the file itself
    compression = _compression(head)
    if compression is not None:
        if source.format in ("csv", "tsv", "jsonl") and not source.path.lower().endswith(COMPRESSIONS):
            kind = {".gz": "gzip", ".zst": "zstd", ".bz2": "bzip2"}[compression]
            raise DataError(f"{source.name}: {kind}-compressed data, read as plain "
                            f"{source.format}", f"name the file with its suffix (FILE.{source.format}"
                            f"{compression}): xent decompresses .gz, .zst and .bz2 as it reads")
        return
    seen = sniff_format(head)
    if tail != head[:4] and head.startswith((b"PAR1", b"FEA1")):
        return  # text that begins like a signature: those formats end with it too
    if seen != source.format and (seen in ("parquet", "arrow")
                                  or (seen == "jsonl" and source.format in ("csv", "tsv"))):
        raise DataError(f"{source.name}: {_FORMAT_NAMES[seen]} by its bytes, named as {source.format}",
                        f"pass --input-format {seen}, or name the file by its format")


def _sniffed_stdin(path: str) -> tuple[str, bytes]:
    """The spooled standard input's path, renamed with a compression suffix when it is gzip,
    zstd or bzip2 (the readers then decompress it as they do a .csv.gz), and its first bytes,
    decompressed."""
    with open(path, "rb") as spool:
        head = spool.read(1 << 16)
    suffix = _compression(head)
    if suffix is None:
        return path, head
    os.rename(path, path + suffix)
    import pyarrow as pa

    try:
        with pa.input_stream(path + suffix, compression="detect") as stream:
            head = stream.read(1 << 16)
            if sniff_format(head) not in ("parquet", "arrow"):
                return path + suffix, head
            # a compressed Parquet or Arrow file: readers seek in it, so it is decompressed whole
            with open(path, "wb") as plain:
                plain.write(head)
                shutil.copyfileobj(stream, plain, 1 << 20)
        os.remove(path + suffix)
        return path, head
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{STDIN_NAME}: looks {suffix[1:]}-compressed but cannot be read as such: {exc}",
                        "check the stream, or decompress it before the pipe") from None


def _spool_stdin(stack: ExitStack, stream: BinaryIO) -> str:
    """Copy standard input to a temporary file: Parquet needs seeking, and one code path for all
    formats keeps memory bounded (the copy streams in 1 MiB blocks)."""
    import tempfile  # only stdin needs it (~2 ms of start-up)

    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="xent-stdin-"))
    path = os.path.join(directory, "stdin")
    with open(path, "wb") as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
    return path


def _unreadable_folder(error: OSError) -> NoReturn:
    raise DataError(f"{error.filename}: cannot read this folder of the dataset ({error.strerror})",
                    "every folder of a dataset is read: its rows would be missing otherwise")


def _loops(top: str, folder: str) -> bool:
    """Whether ``folder`` (below ``top``) is, through links, the same folder as one above it."""
    top, folder = os.path.normpath(top), os.path.normpath(folder)
    real = os.path.realpath(folder)
    above = os.path.dirname(folder)
    while len(above) >= len(top):
        if os.path.realpath(above) == real:
            return True
        above = os.path.dirname(above)
    return False


def _directory_sources(path: str) -> list[Source]:
    files = []
    # folders that are links are followed (a partition may live elsewhere; two partitions may
    # even be links to one folder), except a link back to a folder above it, which would never
    # end; a folder that cannot be listed is an error, not a dataset without its rows
    for root, dirs, names in os.walk(path, onerror=_unreadable_folder, followlinks=True):
        if _loops(path, root):
            dirs[:] = []
            continue
        # hidden and underscore names are not data, folders too (Spark's _temporary, a
        # .spark-staging folder): as pyarrow's datasets skip them
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        files += [os.path.join(root, name) for name in names
                  if format_from_suffix(name) == "parquet" and not name.startswith((".", "_"))]
    files.sort()
    if not files:
        raise DataError(
            f"{path}: directory holds no Parquet files",
            "a directory is read as a partitioned Parquet dataset (*.parquet, *.pq)",
        )
    sources = [Source(f, f, "parquet", _partitions(path, f)) for f in files]
    keys = {tuple(k for k, _ in s.partitions) for s in sources}
    if len(keys) > 1:
        raise DataError(f"{path}: the files sit under different partition keys "
                        f"({' and '.join('/'.join(k) or 'none' for k in sorted(keys))})",
                        "a partitioned dataset has the same key=value directories above every file")
    return sources


def _partitions(root: str, path: str) -> tuple[tuple[str, str | None], ...]:
    """The key=value directories between ``root`` and the file, as Hive, Spark, pyarrow and
    DuckDB write a partitioned dataset (values %-escaped; the null partition has its own name)."""
    from urllib.parse import unquote

    parts = os.path.relpath(os.path.dirname(path), root).split(os.sep)
    pairs = [part.split("=", 1) for part in parts if "=" in part]
    return tuple((unquote(key), None if value == HIVE_NULL else unquote(value)) for key, value in pairs)


def resolve_sources(
    args: Sequence[str], input_format: str | None, stack: ExitStack, stdin: BinaryIO | None = None
) -> list[Source]:
    """Turn command-line paths into sources; ``-`` is standard input, spooled and sniffed."""
    if not args:
        raise UsageError("no input files given", "pass one or more files, or - for standard input")
    if list(args).count("-") > 1:
        raise UsageError("standard input (-) is given more than once", "it can be read once")
    sources: list[Source] = []
    for arg in args:
        if arg == "-":
            path, head = _sniffed_stdin(_spool_stdin(stack, stdin if stdin is not None else sys.stdin.buffer))
            sources.append(Source(path, STDIN_NAME, input_format or sniff_format(head)))
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
            if input_format is None:
                check_content(sources[-1])
    return sources
