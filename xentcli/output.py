"""Where a report goes: standard output, or the file named by ``-o``.

A regular file is replaced atomically (a temporary file beside it, renamed), so that a reader
never sees half a report. What is not a regular file is written as it is: a link is followed to
the file it names, and a pipe or a device (``-o /dev/stdout``) gets the text directly, since
renaming over it would put a plain file in its place."""

from __future__ import annotations

import codecs
import os
import stat
import sys

from xentcli.errors import UsageError, escape_value


def to_stdout(path: str | None) -> bool:
    """No ``-o``, or ``-o -``: the report goes to standard output."""
    return path is None or path == "-"


def _kind(path: str) -> str:
    """What ``path`` is, links followed: "new" (nothing there yet), "folder", "file" (a regular
    file) or "special" (a pipe, a device, ``/dev/stdout``)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "new"
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    return "folder" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "special"


def _cannot_write(path: str, exc: OSError | None = None, why: str | None = None) -> UsageError:
    """The one message for an -o that cannot be written, with the system's reason."""
    reason = why or (exc.strerror if exc is not None else None) or "unknown reason"
    return UsageError(f"-o {path}: cannot write the report ({reason})",
                      "pass a file path that can be written")


def check_output(path: str | None) -> None:
    """Refuse an ``-o`` that cannot be written before any input is read: a run can take
    minutes, and its report would then be lost."""
    if to_stdout(path):
        return
    assert path is not None
    if not path or path.endswith(os.sep):
        raise UsageError(f"-o {escape_value(path)}: not a file name", "pass a file path, e.g. -o report.json")
    kind = _kind(path)
    if kind == "folder":
        raise UsageError(f"-o {path}: is a folder", "pass a file path, e.g. -o report.json")
    if kind == "special":
        return
    denied = kind == "file" and not os.access(path, os.W_OK)
    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"-o {path}: the folder {directory} does not exist", "create it first")
    if denied or not os.access(directory, os.W_OK | os.X_OK):
        raise _cannot_write(path, why="permission denied")


def write_report(text: str, path: str | None) -> None:
    """The report to standard output or to ``path``."""
    if to_stdout(path):
        _write_stdout(text)
        return
    assert path is not None
    if _kind(path) != "special":  # a link: the file it names, which it goes on naming
        _replace(os.path.realpath(path), text, path)
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except BrokenPipeError:  # -o /dev/stdout | head, or a pipe's reader gone: as on stdout
        pass
    except OSError as exc:
        raise _cannot_write(path, exc) from None


def _replace(target: str, text: str, shown: str) -> None:
    """Write to a temporary file beside ``target`` and rename it over ``target``."""
    import tempfile  # here: ~2 ms of start-up that a report on stdout does without

    try:
        fd, tmp = tempfile.mkstemp(prefix=".xent-", dir=os.path.dirname(target))
    except OSError as exc:
        raise _cannot_write(shown, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)  # an existing report keeps its mode
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes it 0600; a report is an ordinary file
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        os.unlink(tmp)
        raise _cannot_write(shown, exc) from None
    except BaseException:
        os.unlink(tmp)
        raise


def _write_stdout(text: str) -> None:
    """The report as UTF-8, whatever the locale says (as in a file written with ``-o``): an
    encoding without the table's box characters or a class's name would end the run with
    nothing written. A closed pipe ends quietly; gates still set the exit code."""
    stream = sys.stdout
    if stream is None:  # the process was started with its standard output closed
        raise UsageError("cannot write the report: standard output is closed",
                         "redirect it to a file or pass -o FILE")
    try:
        buffer = getattr(stream, "buffer", None)
        encoding = getattr(stream, "encoding", None) or "utf-8"
        if buffer is not None and codecs.lookup(encoding).name != "utf-8":
            stream.flush()
            buffer.write(text.encode("utf-8"))
            buffer.flush()
        else:
            stream.write(text)
            stream.flush()
    except BrokenPipeError:
        silence_stdout()
    except OSError as exc:
        silence_stdout()
        raise UsageError(f"cannot write the report to standard output ({exc.strerror})",
                         "pass -o FILE, or free the space or pipe it goes to") from None


def silence_stdout() -> None:
    """Point standard output at the null device: Python flushes it at exit, and that flush must
    not fail again (a closed pipe, a full disk)."""
    if sys.stdout is None:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind it (a test's capture)
        pass
