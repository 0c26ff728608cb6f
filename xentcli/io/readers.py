"""Chunked readers: every format yields Arrow record batches of at most ``chunk_rows`` rows, so
memory never grows with the file.

Each format's pyarrow module is imported where that format is read, and only what reading it
needs: a CSV run does without Parquet, and neither imports pyarrow.parquet, whose import (with
pyarrow.fs, its cloud file systems and ssl) takes ~10 ms (see :class:`ParquetReader`)."""

from __future__ import annotations

import collections
import itertools
import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from xentcli.errors import DataError, escape_value
from xentcli.io.sources import COMPRESSIONS, PARTITION_METADATA, Source

if TYPE_CHECKING:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

CSV_BLOCK_BYTES = 4 << 20
# The longest header line looked for (a very wide file's); a longer one is not found.
MAX_HEADER_BYTES = 256 << 20
HEADER_READ_BYTES = 64 << 10  # read at a time while looking for the end of the header line
CSV_RANGE_BYTES = 8 << 20  # a piece of an uncompressed CSV parsed by one thread
PARQUET_BUFFER_BYTES = 1 << 20
# A footer larger than this (or than the file) is refused before any data is read.
MAX_FOOTER_BYTES = 256 << 20


@dataclass
class RaggedRows:
    """Rows of a text file with the wrong number of fields, found while parsing."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: list[tuple[int | None, int, int, str]] = field(default_factory=list)  # line, want, got, text
    lines: list[int | None] = field(default_factory=list)  # every one's line (None: unknown)
    count: int = 0

    def handler(self, row: pacsv.InvalidRow, line: int | None = None) -> str:
        with self.lock:
            self.count += 1
            self.lines.append(line)
            if len(self.rows) < 5:
                self.rows.append((line, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    def located_handler(self, row: pacsv.InvalidRow) -> str:
        return self.handler(row, row.number)

    @property
    def located(self) -> bool:
        return None not in self.lines


def _csv_parse_options(source: Source, ragged: RaggedRows | None = None, lines: bool = True,
                       ) -> pacsv.ParseOptions:
    """``lines=False`` for a piece of a file split for parallel parsing, where pyarrow numbers
    lines from the piece's start: the ragged rows are counted, their lines found later.

    A quoted value may span lines (``newlines_in_values``): without it, pyarrow cuts its blocks
    at the last line end of each, even inside quotes, and fails ("parser got out of sync")
    wherever a cut lands in such a value; with it, it cuts between rows, at no cost measured
    (2M rows, one thread: 0.81 s either way)."""
    import pyarrow.csv as pacsv

    delimiter = "\t" if source.format == "tsv" else ","
    handler = None if ragged is None else ragged.located_handler if lines else ragged.handler
    return pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=handler, newlines_in_values=True)


def _header_line(source: Source) -> bytes:
    """The first line of a text file (decompressed) with its line end, which is \\n, \\r\\n or a
    lone \\r as pyarrow reads them; the whole of it when it has none (at most MAX_HEADER_BYTES).
    Each read is searched once: a file without a line end is read in linear time."""
    head = bytearray()
    with pa.input_stream(source.path, compression="detect") as stream:
        while len(head) < MAX_HEADER_BYTES:
            more = stream.read(HEADER_READ_BYTES)
            if not more:
                break
            start = max(len(head) - 1, 0)  # a \r that ended the last read may open a \r\n
            head += more
            end = _line_end(head, start)
            if end is not None:
                return bytes(head[:end])
    return bytes(head)


def _line_end(data: bytearray, start: int) -> int | None:
    """Where the first line that ends at or after ``start`` ends (just past its line end); None
    when no line end is there yet, or a \\r is the last byte (a \\n may follow)."""
    lf, cr = data.find(b"\n", start), data.find(b"\r", start)
    if cr < 0 or 0 <= lf < cr:
        return None if lf < 0 else lf + 1
    if cr + 1 == len(data):
        return None
    return cr + 2 if data[cr + 1] == ord("\n") else cr + 1


def _first_block_bytes(head: bytes) -> int:
    """The size of a streaming reader's first block, the one column types are inferred from:
    CSV_BLOCK_BYTES, or 4 times a header line longer than a quarter of that (a very wide file),
    so that the block still holds rows (pyarrow refuses a header longer than it)."""
    return max(CSV_BLOCK_BYTES, 4 * len(head))


def _open_csv(
    source: Source,
    column_types: dict[str, pa.DataType] | None,
    columns: Sequence[str] | None,
    ragged: RaggedRows | None,
    use_threads: bool = True,
) -> pacsv.CSVStreamingReader:
    """A streaming reader. Its first block (see :func:`_first_block_bytes`) holds the header and
    the rows whose types are inferred."""
    import pyarrow.csv as pacsv

    stream = pa.input_stream(source.path, compression="detect")
    read = pacsv.ReadOptions(block_size=_first_block_bytes(_header_line(source)), use_threads=use_threads)
    return pacsv.open_csv(stream, read_options=read, parse_options=_csv_parse_options(source, ragged),
                          convert_options=_csv_convert(column_types, columns))


def _csv_convert(column_types: dict[str, pa.DataType] | None, columns: Sequence[str] | None,
                 ) -> pacsv.ConvertOptions:
    import pyarrow.csv as pacsv

    return pacsv.ConvertOptions(
        column_types=column_types or {},
        include_columns=list(columns) if columns is not None else [],
        null_values=[""],  # "NA", "nan", "null" stay what they are: a label, NaN, a bad number
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )


def _line_ranges(mapped: mmap.mmap, start: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) pieces of about ``size`` bytes from ``start``, each ending at a newline
    (the last one at the end of the file)."""
    end = len(mapped)
    while start < end:
        newline = mapped.find(b"\n", min(start + size, end))
        cut = end if newline < 0 else newline + 1
        yield start, cut - start
        start = cut


def _column_names(source: Source, head: bytes) -> list[str]:
    """The column names as pyarrow reads them from the header line alone."""
    import pyarrow.csv as pacsv

    return pacsv.open_csv(pa.BufferReader(head), parse_options=_csv_parse_options(source)).schema.names


def _map_file(path: str) -> mmap.mmap:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _range_view(mapped: mmap.mmap, piece: tuple[int, int]) -> pa.Buffer:
    """A range of a mapped file, without copying it."""
    start, length = piece
    return pa.py_buffer(memoryview(mapped)[start : start + length])


def _release_range(mapped: mmap.mmap, piece: tuple[int, int]) -> None:
    """Drop a parsed range's pages from the process (the page cache keeps them; a page touched
    again is mapped again): without it the whole file would count as resident by the end."""
    if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        start = piece[0] - piece[0] % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, start, piece[0] + piece[1] - start)


def _parallel_csv(
    source: Source,
    column_types: dict[str, pa.DataType],
    columns: Sequence[str],
    ragged: RaggedRows,
) -> Iterator[pa.RecordBatch]:
    """An uncompressed CSV parsed as byte ranges split at line ends, two at a time on a thread pool,
    yielded in file order (a streaming reader parses serially). A cut may land inside a quoted
    value that spans lines: the rows on either side then have the wrong number of fields (or
    the range does not parse), and ``stream.score_source`` reads the file again serially. Ragged
    rows are counted here; their line numbers are found afterwards by a serial pass (see
    ``locate_ragged``). The first block's rows, parsed already to infer the types, are mostly
    not parsed again (see :func:`_parsed_head`).

    The ranges are parsed from a memory map of the file: read into fresh 8 MiB buffers instead,
    each range cost page faults and a copy (2M rows: ~0.04 s more CPU, ~0.03 s later). As with
    any memory-mapped reader, a file cut short while it is read ends the process (SIGBUS)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.csv as pacsv

    head = _header_line(source)  # it ends in \n (see _splittable)
    names = _column_names(source, head)
    # two blocks per range: ~36k rows each instead of pyarrow's default 1 MiB blocks (~9k rows),
    # which cost the scoring thread a block's fixed overhead four times as often; never less than
    # the first block's rule (4 times the header) so that a wide file's rows still fit
    block = max(CSV_RANGE_BYTES // 2 + HEADER_READ_BYTES, 4 * len(head))
    read = pacsv.ReadOptions(column_names=names, use_threads=False, block_size=block)
    parse = _csv_parse_options(source, ragged, lines=False)
    convert = _csv_convert(column_types, columns)

    mapped = _map_file(source.path)

    def parse_range(piece: tuple[int, int]) -> pa.Table:
        table = pacsv.read_csv(pa.BufferReader(_range_view(mapped, piece)), read_options=read,
                               parse_options=parse, convert_options=convert)
        _release_range(mapped, piece)
        return table

    start, first = _parsed_head(source, column_types, columns) or (len(head), [])
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="xent-csv") as pool:
        ranges = _line_ranges(mapped, start, CSV_RANGE_BYTES)
        pending = [pool.submit(parse_range, piece) for piece in itertools.islice(ranges, 2)]
        yield from first
        for piece in ranges:
            pending.append(pool.submit(parse_range, piece))
            if len(pending) > 2:
                yield from pending.pop(0).result().to_batches()
        for future in pending:
            yield from future.result().to_batches()


@dataclass
class _ParsedHead:
    """The rows of a large CSV's first block as :func:`_schema_of_halves` parsed them, kept for
    the pass that reads the file next (see :func:`_parsed_head`)."""

    key: tuple[str, int, int]  # the file's path, size and modification time
    end: int  # where the block's rows end in the file
    tables: list[pa.Table]


_PARSED_HEADS: list[_ParsedHead] = []  # the last file's, at most one


def _file_key(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


def _keep_head(path: str, end: int, tables: list[pa.Table]) -> None:
    _PARSED_HEADS[:] = [_ParsedHead(_file_key(path), end, tables)]


def _parsed_head(source: Source, column_types: dict[str, pa.DataType], columns: Sequence[str],
                 ) -> tuple[int, list[pa.RecordBatch]] | None:
    """Where the pass over a large CSV starts, and the rows before it as batches of ``columns``:
    the first block's rows, parsed once already to infer the file's schema (2M rows of 10
    classes: 36k rows, median of 24 interleaved runs 505 → 497 ms). Taken once, and only where
    every column is of the type the pass would parse it as: float64 predictions, labels and
    groups as dictionaries of text. Otherwise (an --id column, whose text the pass keeps plain:
    undoing a dictionary would import pyarrow.compute, ~20 ms) None, and the pass parses the
    block itself."""
    try:
        kept = _PARSED_HEADS.pop()
    except IndexError:
        return None
    if kept.key != _file_key(source.path):
        return None
    batches = []
    for table in kept.tables:
        arrays = []
        for name in columns:
            want = column_types.get(name)
            if want is None or table.schema.get_field_index(name) < 0:
                return None
            column = table.column(name)
            if column.type != want:
                return None
            arrays.append(column)
        batches.extend(pa.table(arrays, names=list(columns)).to_batches())
    return kept.end, batches


class ParquetReader:
    """The part of ``pyarrow.parquet.ParquetFile`` that xent uses, over pyarrow's Cython reader
    ``pyarrow._parquet.ParquetReader``, which ParquetFile itself wraps. Importing
    ``pyarrow.parquet`` imports ``pyarrow.fs``, its cloud file systems and ``ssl`` (~9 ms of
    every Parquet run: 10 rows, median of 40 interleaved runs 134.4 → 125.2 ms), for the
    remote paths that xent never opens. :func:`open_parquet` falls back to ParquetFile where
    this reader is not there."""

    def __init__(self, path: str, read_dictionary: Sequence[str] | None = None) -> None:
        from pyarrow._parquet import ParquetReader as CythonReader

        self._reader = CythonReader()
        # ParquetFile's defaults where they differ from the Cython reader's
        self._reader.open(path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False,
                          read_dictionary=read_dictionary, arrow_extensions_enabled=True)

    @property
    def schema_arrow(self) -> pa.Schema:
        return self._reader.schema_arrow

    @property
    def metadata(self) -> Any:
        return self._reader.metadata

    def iter_batches(self, batch_size: int, columns: Sequence[str], use_threads: bool,
                     ) -> Iterator[pa.RecordBatch]:
        """As ParquetFile.iter_batches over every row group: a column is all the leaves whose
        path starts with its name (one for a flat column, more for a nested one)."""
        paths = self._reader.column_paths
        leaves = [i for name in columns for i, path in enumerate(paths) if path[0] == name]
        return self._reader.iter_batches(batch_size, row_groups=range(self._reader.num_row_groups),
                                         column_indices=leaves, use_threads=use_threads)


def open_parquet(path: str, read_dictionary: Sequence[str] | None = None) -> ParquetReader | pq.ParquetFile:
    """A Parquet file opened for reading, through :class:`ParquetReader`, or through
    ``pyarrow.parquet.ParquetFile`` where this pyarrow lacks the Cython reader or the options
    xent sets (a private class, so it may change)."""
    try:
        return ParquetReader(path, read_dictionary)
    except (ImportError, AttributeError, TypeError):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False,
                              read_dictionary=read_dictionary)


def _check_parquet_footer(source: Source, dictionary_columns: Sequence[str] = (),
                          ) -> ParquetReader | pq.ParquetFile:
    size = os.path.getsize(source.path)
    with open(source.path, "rb") as f:
        if size < 12:
            raise DataError(f"{source.name}: not a Parquet file (only {size} bytes)",
                            "the file is empty or truncated")
        f.seek(size - 8)
        tail = f.read(8)
    if tail[4:] != b"PAR1":
        raise DataError(f"{source.name}: not a Parquet file, or truncated (no PAR1 footer)",
                        "re-export the file; a Parquet file ends with the bytes PAR1")
    footer = int.from_bytes(tail[:4], "little")
    if footer > size - 12 or footer > MAX_FOOTER_BYTES:
        raise DataError(f"{source.name}: corrupt Parquet footer (claims {footer} bytes in a "
                        f"{size}-byte file)", "the file is truncated or damaged; re-export it")
    parquet = open_parquet(source.path)
    schema = parquet.schema_arrow
    text = [c for c in dictionary_columns if c in schema.names and
            (pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type))]
    if not text:
        return parquet
    return open_parquet(source.path, read_dictionary=text)


def _partition_keys(source: Source, schema: pa.Schema) -> dict[str, str | None]:
    """The source's partition values by key, for keys that are not columns of the file itself
    (a column of the file wins over a directory name)."""
    return {key: value for key, value in source.partitions if key not in schema.names}


def _with_partitions(schema: pa.Schema, source: Source) -> pa.Schema:
    """The file's schema and its partition keys as text columns."""
    for key in _partition_keys(source, schema):
        schema = schema.append(pa.field(key, pa.string(), metadata=PARTITION_METADATA))
    return schema


def _add_partitions(batch: pa.RecordBatch, keys: dict[str, str | None]) -> pa.RecordBatch:
    """The batch with each partition value as a column: one dictionary entry, every row on it."""
    import numpy as np

    codes = pa.array(np.zeros(batch.num_rows, dtype=np.int32))
    for key, value in keys.items():
        column = (pa.nulls(batch.num_rows, pa.string()) if value is None else
                  pa.DictionaryArray.from_arrays(codes, pa.array([value], pa.string())))
        batch = batch.append_column(pa.field(key, column.type, metadata=PARTITION_METADATA), column)
    return batch


def _open_ipc(source: Source,
              ) -> tuple[pa.ipc.RecordBatchFileReader | pa.ipc.RecordBatchStreamReader, mmap.mmap, pa.Buffer]:
    """An Arrow IPC file, or else stream, reader over a memory map of the file (and the map)."""
    mapped = _map_file(source.path)
    data = pa.py_buffer(mapped)
    try:
        return pa.ipc.open_file(data), mapped, data
    except pa.ArrowInvalid:
        return pa.ipc.open_stream(data), mapped, data


# Batches an Arrow file's pages stay mapped behind the one being read: those the scorer may still
# be reading (see stream.READ_AHEAD) are not let go, which would only have them mapped again.
IPC_BATCHES_KEPT = 8
IPC_RELEASE_BYTES = 1 << 20  # let pages go in steps of at least this much (one system call each)
IPC_COMPRESSED_RELEASE_EVERY = 8  # compressed batches: the whole map is let go every so many


def _ipc_batches(source: Source, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The batches (their ``columns``) of an Arrow IPC file or stream, read from a memory map
    without copying, letting go of the pages behind them as :func:`_release_range` does for CSV:
    uncompressed columns are views into the map, and without it the whole file counted as
    resident by the end (8M rows: 433 MiB peak RSS against 169 for 2M; now 108 for both)."""
    reader, mapped, data = _open_ipc(source)
    batches: Iterator[pa.RecordBatch] = (
        (reader.get_batch(i) for i in range(reader.num_record_batches))
        if isinstance(reader, pa.ipc.RecordBatchFileReader) else iter(reader))
    starts = collections.deque([0], maxlen=IPC_BATCHES_KEPT)  # where recent batches start
    released = 0  # the map before this is let go
    for i, batch in enumerate(batches, 1):
        batch = batch.select(list(columns))
        yield batch
        start = _ipc_position(batch, data)
        if start is None:  # decompressed: no view into the map, which the next batches still read
            if i % IPC_COMPRESSED_RELEASE_EVERY == 0:
                _release_range(mapped, (0, data.size))
            continue
        starts.append(start)
        if starts[0] - released >= IPC_RELEASE_BYTES:
            _release_range(mapped, (released, starts[0] - released))
            released = starts[0]


def _ipc_position(batch: pa.RecordBatch, data: pa.Buffer) -> int | None:
    """Where a batch's own buffers start in the mapped file ``data`` (a dictionary column's
    values, stored once before the batches, are not its own: ``buffers()`` leaves them out);
    None when none of them is in the map (a compressed batch, decompressed into memory)."""
    start, end = data.address, data.address + data.size
    inside = [b.address - start for column in batch.columns for b in column.buffers()
              if b is not None and start <= b.address < end]
    return min(inside, default=None)


_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
         b"\xfe\xff": "UTF-16"}


def _check_text_encoding(source: Source) -> None:
    """Refuse UTF-16/32 text early and by name (pyarrow would read it as garbage columns)."""
    with pa.input_stream(source.path, compression="detect") as stream:
        head = stream.read(1 << 16)
    encoding = next((name for bom, name in _BOMS.items() if head.startswith(bom)), None)
    if encoding is None and b"\x00" in head:
        encoding = "UTF-16 or UTF-32 (NUL bytes)"
    if encoding is not None:
        raise DataError(f"{source.name}: not UTF-8 text; it looks like {encoding}",
                        "save the file as UTF-8 (iconv -f UTF-16 -t UTF-8 FILE)")


def read_schema(source: Source) -> pa.Schema:
    """The file's columns and types (for CSV: as inferred from its first block)."""
    try:
        if source.format in ("csv", "tsv"):
            _check_text_encoding(source)
            schema = _csv_schema(source)
            schema.names  # noqa: B018  (column names that are not UTF-8 fail here, inside the try)
            return schema
        if source.format == "parquet":
            return _with_partitions(_check_parquet_footer(source).schema_arrow, source)
        if source.format == "arrow":
            return _open_ipc(source)[0].schema
        import pyarrow.json as pajson

        return pajson.open_json(source.path).schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable(source, exc) from exc


def _csv_schema(source: Source) -> pa.Schema:
    """Columns and types as inferred from the first block, parsed on one thread (on pyarrow's
    threads the reader also parses blocks ahead that nobody reads: 17-35 ms before any row was
    scored, now ~20), or as two halves on two threads for a large uncompressed file."""
    if _splittable(source):
        schema = _schema_of_halves(source)
        if schema is not None:
            return schema
    return _open_csv(source, None, None, RaggedRows(), use_threads=False).schema


def _schema_of_halves(source: Source) -> pa.Schema | None:
    """The schema pyarrow infers from the file's first block, found by parsing the block's two
    halves at once: a column's inferred type is the first of pyarrow's candidates (null, int64,
    boolean, ..., float64, string) that reads all of its values, so two halves that agree on
    every column give the whole block's schema. The block is what :func:`_open_csv` reads first:
    its whole lines, pyarrow's line ends being \\n and \\r, or all of it at the end of the file.
    None when the halves differ, when either holds no row (pyarrow then infers from a later
    block), or when anything is unusual (no middle line end, a header pyarrow refuses); the
    caller then infers from the whole block as before. The start of a large CSV, 34-60 ms on one
    thread, takes 22-33 ms so."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.csv as pacsv

    head = _header_line(source)
    if not head.endswith(b"\n"):
        return None
    size = _first_block_bytes(head)
    mapped = _map_file(source.path)  # the halves are parsed from it, not from copies
    length = min(size, len(mapped))
    end = length if length < size else max(mapped.rfind(b"\n", 0, length), mapped.rfind(b"\r", 0, length)) + 1
    middle = mapped.find(b"\n", (len(head) + end) // 2, end - 1) + 1
    if middle <= len(head):
        return None
    ragged = RaggedRows()
    parse, convert = _csv_parse_options(source, ragged), _csv_convert(None, None)
    # text columns are parsed straight to dictionaries, as the pass parses labels and groups
    # (see _parsed_head); the schema names them as text, which is what pyarrow infers
    convert.auto_dict_encode, convert.auto_dict_max_cardinality = True, 2**31 - 1

    view = memoryview(mapped)

    def infer(start: int, stop: int, column_names: list[str]) -> pa.Table:
        read = pacsv.ReadOptions(column_names=column_names, use_threads=False, block_size=stop - start + 1)
        return pacsv.read_csv(pa.BufferReader(pa.py_buffer(view[start:stop])), read_options=read,
                              parse_options=parse, convert_options=convert)

    try:
        names = _column_names(source, head)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="xent-csv") as pool:
            halves = [pool.submit(infer, len(head), middle, names), pool.submit(infer, middle, end, names)]
            first, second = (half.result() for half in halves)
    except pa.ArrowInvalid:
        return None
    if not (first.num_rows and second.num_rows and first.schema.equals(second.schema)):
        return None
    if not ragged.count:  # a ragged row is counted by the pass: it parses such a block again
        _keep_head(source.path, end, [first, second])
    return pa.schema([field.with_type(field.type.value_type) if pa.types.is_dictionary(field.type)
                      else field for field in first.schema])


def is_header_only(source: Source) -> bool:
    """A text file whose first block holds no data row."""
    if source.format not in ("csv", "tsv"):
        return False
    ragged = RaggedRows()  # a file whose only rows are ragged is not header-only: say why
    return all(batch.num_rows == 0 for batch in _open_csv(source, None, None, ragged)) and not ragged.count


def locate_ragged(source: Source) -> RaggedRows:
    """Parse serially to learn the line numbers of rows with the wrong number of fields (a
    threaded parse does not know them)."""
    ragged = RaggedRows()
    for _ in _open_csv(source, None, None, ragged, use_threads=False):
        pass
    return ragged


def count_rows(source: Source) -> int | None:
    """Rows known from metadata without reading data (Parquet, Arrow files), else None."""
    if source.format == "parquet":
        return int(_check_parquet_footer(source).metadata.num_rows)
    if source.format == "arrow":
        reader = _open_ipc(source)[0]
        if isinstance(reader, pa.ipc.RecordBatchFileReader):
            return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    return None


def unreadable(source: Source, exc: BaseException) -> DataError:
    """A reader's own exception as one located sentence."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, PermissionError) or "Permission denied" in text:
        return DataError(f"{source.name}: permission denied (the file cannot be read by this user)",
                         "make it readable (chmod +r), or run as a user who may read it")
    if "straddles two block boundaries" in text:  # pyarrow's CSV reader: one row over its block
        return DataError(f"{source.name}: a row too long to read in one block (megabytes in one "
                         "row: a long free-text value?)",
                         "drop or cut the long column first (e.g. with duckdb or csvcut)")
    if "Empty CSV file" in text or "Empty file" in text or _is_empty(source):
        return DataError(f"{source.name}: the file is empty", "a header row and data rows are needed"
                         if source.format in ("csv", "tsv") else "the input holds no rows")
    if isinstance(exc, UnicodeDecodeError) or "UTF8" in text or "utf8" in text.lower():
        return DataError(f"{source.name}: not valid UTF-8 ({text})",
                         "save the file as UTF-8 (iconv -f UTF-16 -t UTF-8 ...)")
    if source.format == "arrow" and _starts_with(source, b"FEA1"):
        return DataError(f"{source.name}: a Feather version 1 file, which xent does not read",
                         "rewrite it as Feather version 2: pyarrow.feather.write_feather("
                         "pyarrow.feather.read_table(FILE), NEW_FILE)")
    if source.format == "jsonl":
        problem = _json_problem(source)
        if problem is not None:
            return DataError(f"{source.name}: {problem[0]}", problem[1])
    return DataError(f"{source.name}: cannot read as {source.format}: {escape_value(text, 200)}",
                     "check that the file is complete and in the format its name says "
                     "(or pass --input-format)")


def _is_empty(source: Source) -> bool:
    try:
        return os.path.getsize(source.path) == 0
    except OSError:
        return False


def _starts_with(source: Source, magic: bytes) -> bool:
    try:
        with open(source.path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


ONE_OBJECT = "write one JSON object per line"
_JSON_TYPES = {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
               dict: "object"}


def _json_problem(source: Source) -> tuple[str, str] | None:
    """What pyarrow refused in a JSON Lines file, found line by line (its own message counts rows
    from 0 within a block), with a hint; None when the first MAX_LINE_SCAN_ROWS lines show
    nothing. The error path only."""
    import io

    first_seen: dict[str, tuple[str, int]] = {}  # key → (JSON type, row)
    row = 0
    try:
        with pa.input_stream(source.path, compression="detect") as raw:
            lines = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
            for number, line in enumerate(itertools.islice(lines, MAX_LINE_SCAN_ROWS), 1):
                if line.strip():
                    row += 1
                    problem = _json_line_problem(line.strip(), row, first_seen)
                    if problem is not None:
                        return f"row {row} (line {number}){problem[0]}", problem[1]
    except (OSError, pa.ArrowException):
        return None
    return None


def _json_line_problem(text: str, row: int, first_seen: dict[str, tuple[str, int]],
                       ) -> tuple[str, str] | None:
    """The line is no JSON object, or a value's JSON type differs from that of the same key in an
    earlier row (null goes with any type)."""
    import json

    try:
        record = json.loads(text)
    except ValueError as exc:
        return f": {escape_value(text)} is not a JSON object ({str(exc).split(':')[0]})", ONE_OBJECT
    if not isinstance(record, dict):
        kind = _JSON_TYPES.get(type(record), "value")
        return f": {escape_value(text)} is not a JSON object (a JSON {kind})", ONE_OBJECT
    for key, value in record.items():
        if value is None:
            continue
        kind = _JSON_TYPES.get(type(value), "value")
        seen_kind, seen_row = first_seen.setdefault(key, (kind, row))
        if seen_kind != kind:
            return (f", column {escape_value(key)}: value {escape_value(json.dumps(value))}; expected a "
                    f"{seen_kind}, as in row {seen_row}",
                    "write each key's values as one JSON type (labels all as strings, or all as numbers)")
    return None


def _splittable(source: Source) -> bool:
    """Large enough to be worth parallel parsing, plain bytes on disk (not compressed), on a
    file system that can map it, and with lines that end in \\n, where the ranges are cut (see
    :func:`_parallel_csv`); else pyarrow's streaming reader reads it, serially (a file whose
    lines end in a lone \\r, as on classic Mac OS, too)."""
    if source.path.lower().endswith(COMPRESSIONS):
        return False
    return (os.path.getsize(source.path) > 2 * CSV_RANGE_BYTES and _mappable(source.path)
            and _header_line(source).endswith(b"\n"))


def _mappable(path: str) -> bool:
    try:
        _map_file(path).close()
    except (OSError, ValueError):
        return False
    return True


def streams_csv(source: Source, serially: bool = False) -> bool:
    """Is the file read through pyarrow's streaming CSV reader (a small or compressed CSV, or any
    CSV read ``serially``: again as text, or again because its ranges were cut inside quoted
    values, see ``stream.score_source``)? Iterated from a Python thread of ours, that reader left the
    interpreter to abort at exit ("terminate called without an active exception", SIGABRT) in 4
    of 200 runs of a script that scored a small CSV, and in 23% of a loop of the reader alone;
    iterated from the thread that calls :func:`xentcli.score`, in none of 650 (pyarrow 26). The
    parallel CSV ranges, Parquet and JSON did not abort from our thread."""
    return source.format in ("csv", "tsv") and (serially or not _splittable(source))


def iter_batches(
    source: Source,
    columns: Sequence[str],
    column_types: dict[str, pa.DataType],
    chunk_rows: int,
    ragged: RaggedRows,
    dictionary_columns: Sequence[str] = (),
    serially: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` of at most ``chunk_rows`` rows. For CSV/TSV, ``column_types``
    fixes how cells convert; other formats keep their own types. Parquet text columns named in
    ``dictionary_columns`` arrive dictionary-encoded, as stored: labels are then mapped once per
    distinct value instead of once per row. ``serially``: a large CSV through the streaming
    reader too, not in ranges."""
    if source.format in ("csv", "tsv") and not serially and _splittable(source):
        batches: Iterator[pa.RecordBatch] = _parallel_csv(source, column_types, columns, ragged)
    elif source.format in ("csv", "tsv"):
        batches = iter(_open_csv(source, column_types, columns, ragged))
    elif source.format == "parquet":
        parquet = _check_parquet_footer(source, dictionary_columns)
        # only the partition columns asked for (--by, --id, a label): each costs ~30 µs a batch
        keys = {k: v for k, v in _partition_keys(source, parquet.schema_arrow).items() if k in columns}
        # decoded on the reader thread alone: the scoring thread needs the other core (measured:
        # 10M rows 0.84 s with pyarrow's thread pool, 0.74 s without)
        batches = parquet.iter_batches(batch_size=chunk_rows, columns=[c for c in columns if c not in keys],
                                       use_threads=False)
        if keys:
            batches = (_add_partitions(b, keys) for b in batches)
    elif source.format == "arrow":
        batches = _ipc_batches(source, columns)
    else:
        batches = _json_batches(source, columns, column_types)
    for batch in batches:
        for start in range(0, batch.num_rows, chunk_rows):
            yield batch.slice(start, chunk_rows)


MAX_LINE_SCAN_ROWS = 5_000_000


def _json_number(dtype: pa.DataType) -> bool:
    """A JSON column type that pyarrow inferred for numbers, or for nulls only."""
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_null(dtype))


def _json_batches(source: Source, columns: Sequence[str], column_types: dict[str, pa.DataType],
                  ) -> Iterator[pa.RecordBatch]:
    """JSON Lines batches of ``columns`` only, each with one type for the whole file: pyarrow
    infers a column's type from the first block (4 MiB), so a probability written 1 there and
    0.25 later, or a key first seen later, ended the read. Numbers of a numeric role
    (``column_types`` float64) are float64; the other columns keep their first block's type;
    keys that no role reads are not parsed at all."""
    import pyarrow.json as pajson

    read = pajson.ReadOptions(block_size=CSV_BLOCK_BYTES)
    inferred = pajson.open_json(source.path, read_options=read).schema
    fields = []
    for name in columns:
        if name not in inferred.names:
            continue  # missing from the first block: the read reports the column as missing
        dtype = inferred.field(name).type
        if column_types.get(name) == pa.float64() and _json_number(dtype):
            dtype = pa.float64()
        elif pa.types.is_list(dtype) and _json_number(dtype.value_type):
            dtype = pa.list_(pa.float64())  # a list column of probabilities written [1, 0] at first
        elif pa.types.is_null(dtype):
            dtype = pa.string()  # null in the first block: text, the type of the other roles
        fields.append(pa.field(name, dtype))
    parse = pajson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")
    for batch in pajson.open_json(source.path, read_options=read, parse_options=parse):
        yield batch.select(list(columns))


def record_lines(source: Source, rows: set[int]) -> dict[int, int]:
    """The physical line on which each of the given data rows starts (a quoted value may span
    lines, so line = row + 1 only holds for simple files). Error path only: a Python CSV scan up
    to the last row asked for; rows beyond MAX_LINE_SCAN_ROWS are left out."""
    import csv
    import io

    wanted = {r for r in rows if r <= MAX_LINE_SCAN_ROWS}
    found: dict[int, int] = {}
    if not wanted:
        return found
    with pa.input_stream(source.path, compression="detect") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        if source.format == "jsonl":  # a record per line; blank lines are no rows
            records = (number for number, line in enumerate(text, 1) if line.strip())
            for row, number in enumerate(records, 1):
                if row in wanted:
                    found[row] = number
                    if len(found) == len(wanted):
                        break
            return found
        reader = csv.reader(text, delimiter="\t" if source.format == "tsv" else ",")
        row, start = -1, 1  # the header is row 0
        # the csv module refuses values over 128 KiB, which pyarrow reads (a long free-text
        # column); the limit is the process's, so it is put back
        limit = csv.field_size_limit(2**31 - 1)
        try:
            for record in reader:
                if record:  # an empty line is no row for pyarrow, which skips it (nor the header)
                    row += 1
                    if row in wanted:
                        found[row] = start
                        if len(found) == len(wanted):
                            break
                start = reader.line_num + 1
        finally:
            csv.field_size_limit(limit)
    return found


def iter_csv_text(source: Source, columns: Sequence[str], chunk_rows: int,
                  ragged: RaggedRows | None = None) -> Iterator[pa.RecordBatch]:
    """The named columns of a CSV as raw text, serially: the slow path that locates a cell that
    the typed read refused (pyarrow's own conversion errors name no row)."""
    reader = _open_csv(source, {c: pa.string() for c in columns}, columns, ragged or RaggedRows(),
                       use_threads=False)
    for batch in reader:
        for start in range(0, batch.num_rows, chunk_rows):
            yield batch.slice(start, chunk_rows)
