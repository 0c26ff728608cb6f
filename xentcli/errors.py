"""Typed errors. The library raises these and never prints; the CLI maps them to stderr and an
exit code in one place (``cli.main``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class XentError(Exception):
    """Base of every error xent raises on purpose."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """The one message the user sees (without the 'xent: error:' prefix)."""
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class UsageError(XentError):
    """A bad flag, flag value or gate expression: exit 2."""

    exit_code = EXIT_USAGE


class DataError(XentError):
    """Bad input data or schema: exit 3."""

    exit_code = EXIT_DATA


def escape_value(value: object, limit: int | None = 60) -> str:
    """Quote a value from the input for a message: control characters and backslashes escaped
    (readable letters of any script kept), long text cut, rich markup never interpreted (the
    CLI prints messages without markup)."""
    text = value if isinstance(value, str) else str(value)
    escaped = "".join(c if c.isprintable() and c not in "\\'" else "\\'" if c == "'"
                      else c.encode("unicode_escape").decode("ascii") for c in text)
    if limit is not None and len(escaped) > limit:
        escaped = escaped[: limit - 3] + "..."
    return f"'{escaped}'"


@dataclass(frozen=True)
class CellProblem:
    """One bad cell: where it is and what is wrong with it."""

    row: int  # 1-based data row within its file
    column: str
    value: str  # already escaped for display
    reason: str  # short key, e.g. "non_finite", also used in rows.skipped_by_reason
    expected: str
    line: int | None = None  # 1-based physical line for text formats
    file: str | None = None  # set when the problems of one error come from several files
    hint: str | None = None  # what to do, when this problem knows better than its reason

    def describe(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")
        if self.file is not None:
            where = f"{self.file} {where}"
        return (
            f"{where}, column {escape_value(self.column)}: "
            f"value {self.value}; expected {self.expected}"
        )


@dataclass
class InvalidRowsError(DataError):
    """Rows that failed validation, located: the first few and the total count."""

    file: str
    problems: Sequence[CellProblem]
    count: int
    hint_text: str | None = None
    reason_counts: dict[str, int] = field(default_factory=dict)
    n_files: int = 1  # inputs with invalid rows (more than those of the problems shown)

    def __post_init__(self) -> None:
        first = self.problems[0]
        noun = "row" if self.count == 1 else "rows"
        lines = [f"{self.file}: {self.count} invalid {noun}; first at {first.describe()}"]
        if first.file is not None:  # several files: each problem names its own
            lines = [f"{self.count} invalid {noun} in {self.n_files} files; first at {first.describe()}"]
        lines += [f"  also {p.describe()}" for p in self.problems[1:]]
        if self.count > len(self.problems):
            lines.append(f"  ... and {self.count - len(self.problems)} more")
        super().__init__("\n".join(lines), self.hint_text)


def one_of(values: Sequence[str]) -> str:
    """'a', 'b' or 'c' — for messages that list what is allowed."""
    quoted = [escape_value(v) for v in values]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
