"""The ``xent`` command: options → one pipeline call → render. The only module that prints or
exits; heavy libraries are imported inside the commands so that ``xent --help`` starts fast."""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer
from typer.models import CommandInfo

from xentcli import __version__
from xentcli.errors import EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, XentError
from xentcli.output import check_output, silence_stdout, to_stdout, write_report

# click's ClickException, whether typer vendors click (>= 0.26) or depends on it: found through a
# public class rather than a private module path
_CLICK_ERRORS: tuple[type[Exception], ...] = tuple(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

if TYPE_CHECKING:
    from xentcli.pipeline import ScoreOptions
    from xentcli.report.model import GateOutcome, Report

app = typer.Typer(
    name="xent",
    help="Score prediction files: cross-entropy (log loss), entropy and KL divergence, overall "
    "and per class, streamed in chunks from CSV, Parquet, Arrow or JSON Lines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class Scale(str, Enum):
    probs = "probs"
    logits = "logits"
    logprobs = "logprobs"


class Base(str, Enum):
    e = "e"
    two = "2"
    ten = "10"


class OnInvalid(str, Enum):
    error = "error"
    skip = "skip"


class InputFormat(str, Enum):
    csv = "csv"
    tsv = "tsv"
    parquet = "parquet"
    arrow = "arrow"
    jsonl = "jsonl"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"xent {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Score prediction files."""


Files = Annotated[list[str], typer.Argument(help="Prediction files (CSV, TSV, Parquet, Arrow, JSON Lines, optionally .gz/.zst/.bz2), a directory of Parquet files, or - for standard input.", metavar="FILE...")]
Label = Annotated[Optional[str], typer.Option(help="Hard-label column (default: the first of label, y, y_true, target, true_label, class).", rich_help_panel="Columns")]
Target = Annotated[Optional[str], typer.Option(help="Soft-target columns: a comma list or glob, one per class, each paired with the prediction of its class by name (t_dog with p_dog).", rich_help_panel="Columns")]
Pred = Annotated[Optional[str], typer.Option(help="Prediction columns: a comma list, a glob ('p_*') or one list column (default: auto-detected; see xent inspect).", rich_help_panel="Columns")]
Classes = Annotated[Optional[str], typer.Option(help="Class names in order, comma-separated (names list-column classes, fixes the order).", rich_help_panel="Columns")]
Weight = Annotated[Optional[str], typer.Option(help="Row-weight column (non-negative numbers).", rich_help_panel="Columns")]
By = Annotated[Optional[list[str]], typer.Option(help="Group column: report every metric per value (repeatable).", rich_help_panel="Columns")]
RowId = Annotated[Optional[str], typer.Option("--id", help="Row-id column, shown in --worst.", rich_help_panel="Columns")]
Multilabel = Annotated[bool, typer.Option("--multilabel", help="Each prediction column is an independent Bernoulli scored against the 0/1 --target column of the same label; reported per label and averaged. Not yet with --worst or --renormalize.", rich_help_panel="Columns")]
Positive = Annotated[Optional[str], typer.Option(help="Binary files: the label value of the positive class (the single prediction column is its probability).", rich_help_panel="Columns")]
ScaleOpt = Annotated[Scale, typer.Option(help="What the prediction columns hold.", rich_help_panel="Math")]
BaseOpt = Annotated[Base, typer.Option(help="Log base: e (nats), 2 (bits) or 10 (hartleys).", rich_help_panel="Math")]
Eps = Annotated[float, typer.Option(help="Clip predicted probabilities below this before taking logs; 0 turns clipping off.", rich_help_panel="Math")]
SumTol = Annotated[float, typer.Option(help="Largest allowed |row sum − 1| of predicted probabilities.", rich_help_panel="Validation")]
Renormalize = Annotated[bool, typer.Option("--renormalize", help="Divide each prediction row by its sum instead of checking it.", rich_help_panel="Validation")]
OnInvalidOpt = Annotated[OnInvalid, typer.Option(help="error: stop at invalid rows (exit 3); skip: drop and count them.", rich_help_panel="Validation")]
ChunkRows = Annotated[int, typer.Option(min=1, help="Rows per chunk (bounds memory).", rich_help_panel="Input")]
InputFormatOpt = Annotated[Optional[InputFormat], typer.Option(help="Read every input in this format instead of guessing from the file name.", rich_help_panel="Input")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Report format.", rich_help_panel="Output")]
Output = Annotated[Optional[str], typer.Option("--output", "-o", help="Write the report to this file (atomically) instead of stdout.", rich_help_panel="Output")]
Precision = Annotated[int, typer.Option(min=0, max=17, help="Digits after the point in table and markdown output.", rich_help_panel="Output")]
Worst = Annotated[int, typer.Option(min=0, help="List the N rows with the highest loss.", rich_help_panel="Output")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no warnings on stderr.", rich_help_panel="Output")]
Debug = Annotated[bool, typer.Option("--debug", help="Show a traceback for internal errors.", rich_help_panel="Output")]
FailIf = Annotated[Optional[list[str]], typer.Option("--fail-if", help="Exit 1 when EXPR holds, e.g. 'cross_entropy > baseline + 1%' (repeatable).", rich_help_panel="Gates")]
Baseline = Annotated[Optional[str], typer.Option(help="An earlier --format json report that 'baseline' in --fail-if refers to.", rich_help_panel="Gates")]
AllowMismatch = Annotated[bool, typer.Option("--allow-signature-mismatch", help="Accept a baseline scored with other settings.", rich_help_panel="Gates")]


def _options(
    *,
    label: str | None,
    target: str | None,
    pred: str | None,
    classes: str | None,
    weight: str | None,
    by: list[str] | None,
    id: str | None,
    positive: str | None,
    scale: Scale,
    multilabel: bool = False,
    base: Base = Base.e,
    eps: float = 2.220446049250313e-16,
    sum_tol: float = 1e-3,
    renormalize: bool = False,
    on_invalid: OnInvalid = OnInvalid.error,
    chunk_rows: int = 65_536,
    input_format: InputFormat | None = None,
    worst: int = 0,
) -> ScoreOptions:
    """The command-line flags as the library's options (every command that reads data starts
    here, so this is also where pyarrow's memory pool is chosen, before any data is read)."""
    from xentcli.io.layout import LayoutRequest
    from xentcli.pipeline import ScoreOptions

    use_jemalloc_pool()

    request = LayoutRequest(
        label=label, target=target, pred=pred,
        classes=classes or None,  # a comma list, split by LayoutRequest
        weight=weight, by=tuple(by or ()), id=id, positive=positive, scale=scale.value,
        multilabel=multilabel,
    )
    return ScoreOptions(
        layout=request, base=base.value, eps=eps, sum_tol=sum_tol, renormalize=renormalize,
        on_invalid=on_invalid.value, chunk_rows=chunk_rows,
        input_format=input_format.value if input_format else None, worst=worst,
    )


@app.command(epilog="Not available yet: --engine dask and --scheduler (distributed scoring); score runs on one machine, in bounded memory, on two threads.")
def score(
    files: Files,
    format: FormatOpt = OutputFormat.table,
    output: Output = None,
    label: Label = None,
    target: Target = None,
    pred: Pred = None,
    classes: Classes = None,
    weight: Weight = None,
    by: By = None,
    row_id: RowId = None,
    positive: Positive = None,
    multilabel: Multilabel = False,
    scale: ScaleOpt = Scale.probs,
    base: BaseOpt = Base.e,
    eps: Eps = 2.220446049250313e-16,
    sum_tol: SumTol = 1e-3,
    renormalize: Renormalize = False,
    on_invalid: OnInvalidOpt = OnInvalid.error,
    chunk_rows: ChunkRows = 65_536,
    input_format: InputFormatOpt = None,
    precision: Precision = 4,
    worst: Worst = 0,
    fail_if: FailIf = None,
    baseline: Baseline = None,
    allow_signature_mismatch: AllowMismatch = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Score prediction files as one stream and print the report.

    Exit codes: 0 scored and every gate passed, 1 a gate failed, 2 usage error, 3 input or data error, 4 internal error, 130 interrupted.
    """
    from xentcli.pipeline import score as run_score

    options = _options(label=label, target=target, pred=pred, classes=classes, weight=weight, by=by,
                       id=row_id, positive=positive, multilabel=multilabel, scale=scale, base=base,
                       eps=eps, sum_tol=sum_tol,
                       renormalize=renormalize, on_invalid=on_invalid, chunk_rows=chunk_rows,
                       input_format=input_format, worst=worst)
    options.check()
    check_output(output)
    gating = bool(fail_if) or baseline is not None  # without gates, the gate module is not imported
    if gating:
        from xentcli import gates as gate_mod
        from xentcli.report.model import SCHEMA_VERSION

        parsed = [gate_mod.parse_gate(expr) for expr in fail_if or ()]
        gate_mod.require_baseline(parsed, baseline is not None)
        baseline_report = None if baseline is None else gate_mod.load_baseline(
            baseline, options.signature(), SCHEMA_VERSION, allow_signature_mismatch)
    def check_classes(names: Sequence[str]) -> None:  # a typo in a gate fails before the pass
        gate_mod.check_classes(parsed, names)

    with _progress_bar(quiet) as progress:
        report = run_score(files, options, progress=progress,
                           check_classes=check_classes if gating else None)
    if gating and parsed:
        results = gate_mod.evaluate_gates(parsed, report.to_dict(), baseline_report, baseline_path=baseline)
        report = report.with_gates(results)
    _emit(report, format.value, output, precision, quiet)
    _exit_if_failed(report.passed, report.gates, precision)


@contextmanager
def _progress_bar(quiet: bool) -> Iterator[Callable[[int, int | None], None] | None]:
    """A rich progress bar on stderr (rows and rows/s), only for a terminal and without -q."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,.0f} rows"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("score", total=None, rate="")

        def update(rows: int, total: int | None) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{rows / elapsed:,.0f} rows/s" if elapsed > 0 else ""
            bar.update(task, completed=rows, total=total, rate=rate)

        yield update


def _emit(report: Report, fmt: str, output: str | None, precision: int, quiet: bool) -> None:
    from xentcli.report.render import render

    if not quiet:
        for warning in report.warnings:
            typer.echo(f"xent: warning: {warning}", err=True)
    write_report(render(report, fmt, precision, _color(fmt, output)), output)


@app.command()
def inspect(
    file: Annotated[str, typer.Argument(help="A prediction file (or - for standard input).")],
    label: Label = None,
    target: Target = None,
    pred: Pred = None,
    classes: Classes = None,
    weight: Weight = None,
    by: By = None,
    row_id: RowId = None,
    positive: Positive = None,
    scale: ScaleOpt = Scale.probs,
    input_format: InputFormatOpt = None,
) -> None:
    """Show the format, row count, each column's detected role and why, and the classes."""
    from xentcli.pipeline import inspect_layout
    from xentcli.report.inspect import render_inspection

    options = _options(label=label, target=target, pred=pred, classes=classes, weight=weight, by=by,
                       id=row_id, positive=positive, scale=scale, input_format=input_format)
    write_report(render_inspection(*inspect_layout(file, options)), None)


@app.command()
def compare(
    base_file: Annotated[str, typer.Argument(help="Predictions of the baseline model (any format score reads).", metavar="BASE")],
    new_file: Annotated[str, typer.Argument(help="Predictions of the new model for the same rows.", metavar="NEW")],
    row_id: Annotated[Optional[str], typer.Option("--id", help="Pair rows by this column (default: by row order).", rich_help_panel="Columns")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Paired bootstrap replicates for the confidence interval of each difference (0: none).", rich_help_panel="Bootstrap")] = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Random seed of the bootstrap.", rich_help_panel="Bootstrap")] = 0,
    confidence: Annotated[float, typer.Option(help="Confidence level of the interval.", rich_help_panel="Bootstrap")] = 0.95,
    format: FormatOpt = OutputFormat.table,
    output: Output = None,
    label: Label = None,
    target: Target = None,
    pred: Pred = None,
    classes: Classes = None,
    weight: Weight = None,
    positive: Positive = None,
    scale: ScaleOpt = Scale.probs,
    base: BaseOpt = Base.e,
    eps: Eps = 2.220446049250313e-16,
    sum_tol: SumTol = 1e-3,
    renormalize: Renormalize = False,
    on_invalid: OnInvalidOpt = OnInvalid.error,
    chunk_rows: ChunkRows = 65_536,
    input_format: InputFormatOpt = None,
    precision: Precision = 4,
    fail_if: Annotated[Optional[list[str]], typer.Option("--fail-if", help="Exit 1 when EXPR holds for the difference new − base, e.g. 'cross_entropy > 0.01' (repeatable).", rich_help_panel="Gates")] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Score two models' predictions for the same rows: each metric for both, the difference (new − base) and its paired bootstrap confidence interval."""
    from xentcli import gates as gate_mod
    from xentcli.compare import CompareOptions
    from xentcli.compare import compare as run_compare
    from xentcli.report.render import render_compare

    score_options = _options(label=label, target=target, pred=pred, classes=classes, weight=weight, by=None,
                             id=None, positive=positive, scale=scale, base=base, eps=eps, sum_tol=sum_tol,
                             renormalize=renormalize, on_invalid=on_invalid, chunk_rows=chunk_rows,
                             input_format=input_format, worst=0)
    options = CompareOptions(score_options, row_id, bootstrap, seed, confidence)
    options.check()
    check_output(output)
    parsed = [gate_mod.parse_gate(expr) for expr in fail_if or ()]
    gate_mod.require_baseline(parsed, False, compare=True)
    report = run_compare([base_file], [new_file], options)
    if parsed:
        report = report.with_gates(gate_mod.evaluate_gates(parsed, report.gate_view(), None))
    write_report(render_compare(report, format.value, precision, _color(format.value, output)), output)
    _exit_if_failed(report.passed, report.gates, precision)


def _color(fmt: str, output: str | None) -> bool:
    """Colour only for a table on a terminal, and not when NO_COLOR is set."""
    return (fmt == "table" and to_stdout(output) and sys.stdout is not None and sys.stdout.isatty()
            and "NO_COLOR" not in os.environ)


def _exit_if_failed(passed: bool, outcomes: Sequence[GateOutcome], precision: int) -> None:
    """Failed gates: one line each on stderr (numbers at --precision, or as many more digits as
    part them), and exit code 1."""
    if passed:
        return
    from xentcli.gates import failure_lines

    for line in failure_lines(outcomes, precision):
        typer.echo(line, err=True)
    raise typer.Exit(EXIT_GATE_FAILED)


def _fail(message: str, code: int) -> NoReturn:
    if sys.stderr is not None:  # None: started with its standard error closed
        sys.stderr.write(f"xent: error: {message}\n")
        sys.stderr.flush()
    raise SystemExit(code)


def _pipe_closed_while_printing() -> bool:
    """Whether typer's or rich's own handler of a closed pipe ended the run (each exits 1, which
    here means a failed gate): click wraps sys.stdout, rich points it at the null device."""
    if type(sys.stdout).__name__ == "PacifyFlushWrapper":
        return True
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's capture), or closed
        return False


def _quiet_broken_pipe() -> NoReturn:
    silence_stdout()
    raise SystemExit(0)


def _command_name(command: CommandInfo) -> str:
    """A registered command's name on the command line."""
    return str(command.name or getattr(command.callback, "__name__", ""))


def _app_for(args: list[str]) -> typer.Typer:
    """The app with only the command being run: typer builds the click command of every
    registered command at each start (~2 ms each), although one runs."""
    chosen = [c for c in app.registered_commands if args and args[0] == _command_name(c)]
    if not chosen:
        return app  # no command named first (--help, --version, a typo): the whole app
    slim = copy.copy(app)
    slim.registered_commands = chosen
    return slim


def main(argv: list[str] | None = None) -> None:
    """Entry point: every exception ends here as one line on stderr and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        try:
            result = _app_for(args)(args=args, prog_name="xent", standalone_mode=False)
        except SystemExit as exc:
            if exc.code == 1 and _pipe_closed_while_printing():  # --help | head: quietly, as a report
                _quiet_broken_pipe()
            raise
        if result == EXIT_INTERRUPTED:  # typer returns Ctrl-C as 130 in non-standalone mode
            _fail("interrupted", EXIT_INTERRUPTED)
        raise SystemExit(result if isinstance(result, int) else 0)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        _fail("interrupted", EXIT_INTERRUPTED)
    except _CLICK_ERRORS as exc:  # a usage error found by the option parser: one message
        code = getattr(exc, "exit_code", EXIT_USAGE)
        message = exc.format_message()  # type: ignore[attr-defined]
        if not message:  # bare `xent`: the help, already printed, says it all
            raise SystemExit(code) from None
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "xent"
        if command == "xent" and args and args[0] in map(_command_name, app.registered_commands):
            # an option's missing value is found before the command's own context exists
            command = f"xent {args[0]}"
        _fail(f"{message}\nhint: see {command} --help", code)
    except XentError as exc:
        _fail(exc.render(), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        _fail(f"internal error ({type(exc).__name__}: {detail}); this is a bug. Run again with "
              "--debug for the traceback and report it.", EXIT_INTERNAL)


def use_jemalloc_pool() -> None:
    """Have pyarrow allocate from jemalloc where it is built in, unless the user chose a pool
    (ARROW_DEFAULT_MEMORY_POOL). pyarrow's default, mimalloc, gives the reader thread fresh 2 MiB
    huge pages that the kernel zeroes: 0.03-0.27 s of system time per 10M Parquet rows, varying
    from run to run. With jemalloc: 0.05-0.09 s, peak RSS 146 MiB instead of 171-212, and over 20
    interleaved runs a median of 0.55 s instead of 0.59 (the best runs alike)."""
    import pyarrow as pa

    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ and "jemalloc" in pa.supported_memory_backends():
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def run() -> NoReturn:
    """The console command: :func:`main`, then an immediate exit. By then the output is written,
    the files are closed and temporary files removed, so the interpreter's teardown (freeing
    every module of numpy and pyarrow, ~25 ms) has nothing left to do for the user. The console
    command enters through :func:`xentcli.console.run`, which tunes the process first."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            sys.stderr.write(f"{exc.code}\n")
            code = 1
    try:
        if sys.stdout is not None:  # None: started with its standard output closed
            sys.stdout.flush()
    except OSError:  # a closed pipe or a full disk, already reported if it held the report
        silence_stdout()
    if sys.stderr is not None:
        sys.stderr.flush()
    os._exit(code)
