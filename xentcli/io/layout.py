"""Column roles: which columns are the label, targets, predictions, weight, groups and id, the
class names, and why each was chosen (``xent inspect`` prints the reasons)."""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from xentcli.errors import DataError, UsageError, escape_value, one_of
from xentcli.io.sources import PARTITION_METADATA

LABEL_NAMES = ("label", "y", "y_true", "target", "true_label", "class")
LIST_PRED_NAMES = ("probs", "probabilities", "y_pred", "pred", "logits")
SEPARATORS = "_-.:"


@dataclass(frozen=True)
class LayoutRequest:
    """What the user asked for on the command line (None: auto-detect)."""

    label: str | None = None
    target: str | None = None
    pred: str | None = None
    classes: Sequence[str] | None = None
    weight: str | None = None
    by: Sequence[str] = ()
    id: str | None = None
    positive: str | None = None
    scale: str = "probs"
    multilabel: bool = False
    # Not a flag: the order to put the classes in when the prediction columns name the same
    # classes in another order (xent compare scores NEW in BASE's class order, so that ties go
    # to BASE's lowest class index); unlike --classes, classes named otherwise are left alone.
    class_order: Sequence[str] | None = None

    def __post_init__(self) -> None:
        """Values from the Python API as the CLI would give them: a column name for ``by``, a
        comma list for ``classes``, class names and a positive label as text."""
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if isinstance(self.classes, str):
            put("classes", tuple(c.strip() for c in self.classes.split(",")))
        elif self.classes is not None:
            put("classes", tuple(str(c) for c in self.classes))
        put("by", (self.by,) if isinstance(self.by, str) else tuple(self.by))
        if self.positive is not None and not isinstance(self.positive, str):
            put("positive", str(self.positive))
        if self.class_order is not None:
            put("class_order", tuple(self.class_order))


@dataclass(frozen=True)
class Layout:
    """The resolved roles of a file's columns."""

    label_column: str | None
    target_columns: tuple[str, ...] | None
    pred_columns: tuple[str, ...]
    pred_is_list: bool
    classes: tuple[str, ...] | None  # None: a list column whose length is seen in the first row
    binary: bool
    multilabel: bool
    label_kind: str  # "text", "integer" or "boolean"
    positional_labels: bool  # integer labels are positions 0..K-1
    positive: str | None
    scale: str
    weight_column: str | None = None
    group_columns: tuple[str, ...] = ()
    id_column: str | None = None
    class_origin: str = ""  # where the class names came from, for inspect
    reasons: dict[str, tuple[str, str]] = field(default_factory=dict)  # column → (role, why)

    @property
    def columns(self) -> list[str]:
        """Every column to read, each once, in a stable order."""
        names = [self.label_column, *(self.target_columns or ()), *self.pred_columns,
                 self.weight_column, *self.group_columns, self.id_column]
        return list(dict.fromkeys(n for n in names if n is not None))

    @property
    def key_columns(self) -> list[str]:
        """Label and group columns: few distinct values, worth reading dictionary-encoded."""
        return [n for n in (self.label_column, *self.group_columns) if n is not None]

    def csv_types(self) -> dict[str, pa.DataType]:
        """How CSV cells of each role convert: labels, groups and ids stay text exactly as
        written; every number is float64. Labels and groups, which repeat, arrive
        dictionary-encoded: each distinct text is then looked up once per block."""
        types: dict[str, pa.DataType] = {}
        for name in (self.label_column, *self.group_columns):
            if name is not None:
                types[name] = pa.dictionary(pa.int32(), pa.string())
        if self.id_column is not None:
            types[self.id_column] = pa.string()
        numeric = [*(self.target_columns or ()), self.weight_column]
        if not self.pred_is_list:
            numeric += list(self.pred_columns)
        for name in numeric:
            if name is not None:
                types[name] = pa.float64()
        return types


def is_numeric(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype))


def is_text(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
                or pa.types.is_string_view(dtype))


def is_list(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_list(dtype) or pa.types.is_large_list(dtype)
                or pa.types.is_fixed_size_list(dtype) or pa.types.is_list_view(dtype))


def class_namings(names: Sequence[str]) -> list[list[str]]:
    """Every way to name classes after columns: each shared prefix that ends in one of
    ``_ - . :`` cut off, the longest first (the default naming), then the names as they are.
    ``p_new_york, p_new_jersey`` can be ``york, jersey``, ``new_york, new_jersey`` or themselves."""
    namings = []
    common = os.path.commonprefix(list(names)) if len(names) > 1 else ""
    cuts = sorted({i + 1 for i, ch in enumerate(common) if ch in SEPARATORS}, reverse=True)
    for cut in cuts:
        if all(len(n) > cut for n in names):
            namings.append([n[cut:] for n in names])
    namings.append(list(names))
    return namings


def strip_shared_prefix(names: Sequence[str]) -> tuple[str, list[str]]:
    """('p_', ['cat', 'dog']) for ['p_cat', 'p_dog']: the longest shared prefix that ends in one
    of ``_ - . :`` and leaves every name non-empty, cut off (the first of :func:`class_namings`)."""
    names = list(names)
    stripped = class_namings(names)[0]
    return (names[0][: len(names[0]) - len(stripped[0])] if names else ""), stripped


def _missing_column(name: str, schema: pa.Schema, flag: str) -> DataError:
    close = difflib.get_close_matches(name, schema.names, n=3)
    hint = f"did you mean {one_of(close)}?" if close else f"the columns are {one_of(schema.names[:20])}"
    return DataError(f"{flag} {escape_value(name)}: no such column", hint)


def select_columns(spec: str, schema: pa.Schema, flag: str) -> list[str]:
    """A comma list or glob of column names, checked against the schema, in the order given
    (globs in file order)."""
    if _is_glob(spec):
        names = [n for n in schema.names if fnmatch.fnmatchcase(n, spec)]
        if not names:
            raise DataError(f"{flag} {escape_value(spec)} matches no column",
                            f"the columns are {one_of(schema.names[:20])}")
        return names
    names = [part.strip() for part in spec.split(",") if part.strip()]
    for name in names:
        if name not in schema.names:
            raise _missing_column(name, schema, flag)
    if len(set(names)) != len(names):
        raise UsageError(f"{flag} {escape_value(spec)} names a column twice")
    return names


def _check_schema(schema: pa.Schema) -> None:
    seen: set[str] = set()
    for name in schema.names:
        if name in seen:
            raise DataError(f"duplicate column name {escape_value(name)}",
                            "give every column a distinct name")
        seen.add(name)
    for fld in schema:  # SPEC 3: an extension-typed column is a schema error, named by its type
        extension = _extension_name(fld)
        if extension is not None:
            raise DataError(f"column {escape_value(fld.name)} has extension type {escape_value(extension)}, "
                            "which xent does not read", "store plain numbers, text or lists of numbers")


def _extension_name(fld: pa.Field) -> str | None:
    """The extension type of a column: registered in this process, or not (its name then stays
    in the field's metadata, over the storage type); None for a plain column."""
    if isinstance(fld.type, pa.BaseExtensionType):
        return str(getattr(fld.type, "extension_name", fld.type))
    name = (fld.metadata or {}).get(b"ARROW:extension:name")
    return None if name is None else name.decode("utf-8", "replace")


def _find_label(schema: pa.Schema, taken: set[str]) -> tuple[str | None, str]:
    lowered: dict[str, list[str]] = {}
    for name in schema.names:
        lowered.setdefault(name.lower(), []).append(name)
    for candidate in LABEL_NAMES:
        found = [n for n in lowered.get(candidate, []) if n not in taken]
        if len(found) > 1:
            raise DataError(f"ambiguous label column: {one_of(found)} both match {candidate!r}",
                            "pick one with --label COL")
        if found:
            return found[0], f"named {candidate!r} (first of {', '.join(LABEL_NAMES)})"
    return None, ""


def _pandas_index(schema: pa.Schema) -> set[str]:
    """Columns that hold a pandas DataFrame's index (``to_parquet`` keeps one that is not a plain
    range, e.g. after filtering rows, as ``__index_level_0__``): numbers, but no predictions."""
    names = {n for n in schema.names if re.fullmatch(r"__index_level_\d+__", n)}
    try:
        metadata = schema.pandas_metadata or {}
    except ValueError:  # metadata that is not JSON: no index known
        metadata = {}
    index = metadata.get("index_columns", []) if isinstance(metadata, dict) else []
    return names | {c for c in index if isinstance(c, str) and c in schema.names}


def _own_prefix(name: str) -> str:
    """'p_' for 'p_dog': with one numeric column, text columns named like it are predictions too
    (a text cell in a probability column is an error at that cell, not a reason to drop it)."""
    cut = max(name.rfind(sep) for sep in SEPARATORS) + 1
    return name[:cut] if 0 < cut < len(name) else ""


def _auto_preds(schema: pa.Schema, taken: set[str]) -> tuple[list[str], bool, str]:
    """Prediction columns by the rules of SPEC section 2: a list column with a known name, else
    every remaining numeric column plus text columns that share their name prefix."""
    lists = [f.name for f in schema if f.name.lower() in LIST_PRED_NAMES and is_list(f.type)
             and f.name not in taken]
    if len(lists) > 1:
        raise DataError(f"ambiguous prediction columns: {one_of(lists)} are all list columns",
                        "pick one with --pred COL")
    if lists:
        return lists, True, f"list column named {lists[0]!r}"
    numeric = [f.name for f in schema if f.name not in taken and is_numeric(f.type)]
    if not numeric:  # a column with no value at all (null-typed) may be an empty probability column
        numeric = [f.name for f in schema if f.name not in taken and pa.types.is_null(f.type)]
    if not numeric:
        return [], False, ""
    prefix = strip_shared_prefix(numeric)[0] if len(numeric) > 1 else _own_prefix(numeric[0])
    if prefix:
        numeric = [f.name for f in schema if f.name not in taken and f.name.startswith(prefix)
                   and (is_numeric(f.type) or is_text(f.type) or pa.types.is_null(f.type))]
    return numeric, False, (f"numeric column with prefix {prefix!r}" if prefix
                            else "every remaining numeric column (no --pred given)")


def _label_kind(dtype: pa.DataType) -> str:
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_dictionary(dtype):
        return _label_kind(dtype.value_type)
    return "text"


def _is_int_text(name: str) -> bool:
    return name.lstrip("-").isdigit()


def resolve_layout(schema: pa.Schema, request: LayoutRequest) -> Layout:
    """Decide every column's role from the schema and the user's flags."""
    _check_schema(schema)
    reasons: dict[str, tuple[str, str]] = {}
    fixed = {"--weight": request.weight, "--id": request.id}
    for flag, name in fixed.items():
        if name is not None and name not in schema.names:
            raise _missing_column(name, schema, flag)
    for name in request.by:
        if name not in schema.names:
            raise _missing_column(name, schema, "--by")
    taken = {n for n in (request.weight, request.id, *request.by) if n is not None}
    if request.weight:
        reasons[request.weight] = ("weight", "--weight")
    for name in request.by:
        reasons[name] = ("group", "--by")
    if request.id:
        reasons[request.id] = ("row id", "--id")

    target_columns: tuple[str, ...] | None = None
    label: str | None = None
    if request.target is not None:
        target_columns = tuple(select_columns(request.target, schema, "--target"))
        taken |= set(target_columns)
        reasons.update({c: ("soft target", "--target") for c in target_columns})
    elif request.label is not None:
        if request.label not in schema.names:
            raise _missing_column(request.label, schema, "--label")
        label = request.label
        reasons[label] = ("label", "--label")
    else:
        label, why = _find_label(schema, taken - set(request.by))  # grouping by the label is fine
        if label is None:
            raise DataError("no label column found",
                            f"name it one of {', '.join(LABEL_NAMES)}, or pass --label COL "
                            "(or --target COLS for soft targets)")
        reasons[label] = ("label", why)
    if label is not None:
        taken.add(label)

    if request.pred is not None:
        preds = select_columns(request.pred, schema, "--pred")
        pred_is_list = len(preds) == 1 and is_list(schema.field(preds[0]).type)
        pred_why = "--pred"
    else:
        index = _pandas_index(schema) - taken
        reasons.update({c: ("ignored", "the DataFrame index pandas wrote") for c in index})
        partitions = {f.name for f in schema if f.metadata == PARTITION_METADATA} - taken
        preds, pred_is_list, pred_why = _auto_preds(schema, taken | index | partitions)
        if not preds:
            raise DataError("no prediction columns found",
                            "name a list column probs/pred/logits, add numeric probability "
                            "columns, or pass --pred COLS")
    overlap = taken & set(preds)
    if overlap:
        raise UsageError(f"column {one_of(sorted(overlap))} cannot be a prediction and also "
                         "have another role")
    reasons.update({c: ("prediction", pred_why) for c in preds})
    return _finish_layout(schema, request, label, target_columns, preds, pred_is_list, reasons)


def _finish_layout(
    schema: pa.Schema,
    request: LayoutRequest,
    label: str | None,
    target_columns: tuple[str, ...] | None,
    preds: list[str],
    pred_is_list: bool,
    reasons: dict[str, tuple[str, str]],
) -> Layout:
    label_kind = _label_kind(schema.field(label).type) if label is not None else "text"
    if pred_is_list and not is_numeric(values := schema.field(preds[0]).type.value_type):
        raise DataError(f"the list column {escape_value(preds[0])} holds {values} values, not numbers",
                        "a list column holds one number per class in each row (a list of lists "
                        "is not read: flatten it)")
    if target_columns is not None and not pred_is_list:
        target_columns = _paired_targets(target_columns, preds, request)
    if request.classes is not None and not pred_is_list and len(preds) > 1:
        preds, target_columns = _in_class_order(request.classes, preds, target_columns)
    elif request.class_order is not None and not pred_is_list and len(preds) > 1 and label_kind != "integer":
        # (integer labels may be positions in the file's column order, which must stay as it is)
        order = _class_permutation(request.class_order, preds)
        if order is not None:
            preds, target_columns = _permuted(order, preds, target_columns)
    if request.multilabel and target_columns is None:
        raise UsageError("--multilabel needs --target COLS: the 0/1 column of each label",
                         "e.g. --multilabel --target 'y_*' --pred 'p_*'")
    # one probability column: P(positive), against labels or one soft-target column P(positive)
    binary = (not pred_is_list and len(preds) == 1 and not request.multilabel
              and (target_columns is None or len(target_columns) == 1))
    if request.positive is not None and (not binary or target_columns is not None):
        what = ("a list column" if pred_is_list else "soft targets" if target_columns is not None
                else f"{len(preds)} prediction columns")
        raise UsageError(f"--positive names the positive label of a binary file (one prediction "
                         f"column and labels); this one has {what}")
    positive = request.positive
    if positive is not None and label_kind == "boolean":  # its cells read as true and false
        if positive.lower() not in ("true", "false"):
            raise UsageError(f"--positive {escape_value(positive)}: the label column "
                             f"{escape_value(label)} holds booleans",
                             "pass --positive true or --positive false")
        positive = positive.lower()
    classes = _classes(schema, request, preds, pred_is_list, binary, label_kind, target_columns)
    positional = (label is not None and label_kind == "integer" and classes is not None
                  and not binary and not any(_is_int_text(c) for c in classes))
    return Layout(
        label_column=label,
        target_columns=target_columns,
        pred_columns=tuple(preds),
        pred_is_list=pred_is_list,
        classes=classes,
        binary=binary,
        multilabel=request.multilabel,
        label_kind=label_kind,
        positional_labels=positional,
        positive=positive,
        scale=request.scale,
        weight_column=request.weight,
        group_columns=tuple(request.by),
        id_column=request.id,
        class_origin=_class_origin(request, binary, pred_is_list, classes),
        reasons=reasons,
    )


def _class_origin(request: LayoutRequest, binary: bool, pred_is_list: bool,
                  classes: tuple[str, ...] | None) -> str:
    if request.classes is not None:
        return "from --classes"
    if binary and classes == ("0", "1") and request.label is None and request.target is not None:
        return "0 and 1: the target column holds P(1), as the prediction column does"
    if binary:
        return "named by the label values, negative first"
    if pred_is_list:
        return "positions 0..K-1 of the list column (name them with --classes)"
    return "from the prediction column names, any shared prefix stripped"


def _is_glob(spec: str | None) -> bool:
    return spec is not None and any(ch in spec for ch in "*?[")


def _paired_targets(targets: tuple[str, ...], preds: list[str], request: LayoutRequest,
                    ) -> tuple[str, ...]:
    """The target columns in the order of the prediction columns, each paired with the
    prediction of its class by name (``t_dog`` with ``p_dog``), never by position alone: a glob
    lists columns in the file's order, which need not be the same for both. Columns whose names
    do not pair up are taken in the order given only when both lists were given by name."""
    if len(targets) != len(preds) or len(preds) < 2:
        return targets  # a count mismatch is reported with the classes
    target_names, pred_names = strip_shared_prefix(targets)[1], strip_shared_prefix(preds)[1]
    if sorted(target_names) == sorted(pred_names):  # distinct column names: distinct class names
        return tuple(targets[target_names.index(name)] for name in pred_names)
    if request.pred is not None and not _is_glob(request.pred) and not _is_glob(request.target):
        return targets
    flags = f"--target {','.join(targets)} --pred {','.join(preds)}"
    raise DataError(f"the target columns ({', '.join(target_names)}) and the prediction columns "
                    f"({', '.join(pred_names)}) name different classes, so they cannot be paired "
                    "by class", f"name both lists in matching order, e.g. {flags}")


def _in_class_order(classes: Sequence[str], preds: list[str], targets: tuple[str, ...] | None,
                    ) -> tuple[list[str], tuple[str, ...] | None]:
    """Wide columns reordered so that column k holds class ``classes[k]``: --classes fixes the
    order, matching each name to a column by its class part (never renaming by position). The
    class part may be any of :func:`class_namings`: ``new_york`` names ``p_new_york`` as well
    as ``york`` does."""
    order = _class_permutation(classes, preds)
    if order is None:
        raise DataError(f"--classes {','.join(classes)} does not match the prediction columns' classes "
                        f"({', '.join(strip_shared_prefix(preds)[1])})",
                        "for one column per class, --classes lists those classes in the order you "
                        "want (to rename classes, rename the columns)")
    return _permuted(order, preds, targets)


def _class_permutation(classes: Sequence[str], preds: list[str]) -> list[int] | None:
    """For each of ``classes``, the position of its prediction column, by one of the columns'
    :func:`class_namings` (None: no naming has exactly these classes)."""
    names = next((n for n in class_namings(preds) if sorted(n) == sorted(classes)), None)
    return None if names is None else [names.index(c) for c in classes]


def _permuted(order: list[int], preds: list[str], targets: tuple[str, ...] | None,
              ) -> tuple[list[str], tuple[str, ...] | None]:
    return [preds[i] for i in order], None if targets is None else tuple(targets[i] for i in order)


def _classes(
    schema: pa.Schema,
    request: LayoutRequest,
    preds: list[str],
    pred_is_list: bool,
    binary: bool,
    label_kind: str,
    target_columns: tuple[str, ...] | None,
) -> tuple[str, ...] | None:
    if binary:
        return _binary_classes(request, label_kind, soft=target_columns is not None)
    if pred_is_list:
        width = getattr(schema.field(preds[0]).type, "list_size", None)
        if request.classes is not None:
            if width is not None and width != len(request.classes):
                raise DataError(f"--classes names {len(request.classes)} classes but "
                                f"{escape_value(preds[0])} holds {width} values per row")
            return tuple(request.classes)
        return tuple(str(k) for k in range(width)) if width is not None else None
    names = strip_shared_prefix(preds)[1]
    if target_columns is not None and len(target_columns) != len(preds):
        raise DataError(f"--target names {len(target_columns)} columns but there are "
                        f"{len(preds)} prediction columns", "give one target column per class")
    if request.classes is not None:
        if len(request.classes) != len(preds):
            raise UsageError(f"--classes names {len(request.classes)} classes but there are "
                             f"{len(preds)} prediction columns ({one_of(preds[:10])})")
        return tuple(request.classes)
    if len(set(names)) != len(names):
        raise DataError(f"prediction columns give duplicate class names: {one_of(names)}")
    return tuple(names)


def _binary_classes(request: LayoutRequest, label_kind: str, soft: bool = False) -> tuple[str, ...] | None:
    if request.classes is not None:
        if len(request.classes) != 2:
            raise UsageError("a single probability column is binary: --classes needs two names "
                             "(negative, positive)")
        return tuple(request.classes)
    if soft:  # no labels to name them
        return ("0", "1")
    if request.positive is not None:
        return None  # the negative class is named by the other label value seen in the data
    if label_kind == "boolean":
        return ("false", "true")
    if label_kind == "integer":
        return ("0", "1")
    return None  # text labels: 0/1 or true/false, decided on the first chunk
