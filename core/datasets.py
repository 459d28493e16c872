"""Training data: load it, check it, render it and measure it before a job starts.

A fine-tune that dies on line 9817 of a JSONL file after minutes of model loading is the worst
way to learn the file is broken. Everything here runs in the UI process, reads the file once and
says exactly which line and column is wrong, and what to do about it.

Module-level imports stay in the standard library: `datasets`, `pyarrow`, `jinja2` and
`tokenizers` are imported inside the functions that need them, so the TUI starts fast.
"""

from __future__ import annotations

import bisect
import csv
import functools
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import text_template as grammar
from .errors import AitkError

KINDS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Per kind of problem, how many line-level issues a report lists before it gives a count instead.
MAX_PER_KIND = 5

_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(:[\w.-]+)?")
_JSON_WS = re.compile(r"[ \t\n\r]*")
_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}

HINT_UTF8 = "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`)"
HINT_JSONL = 'each line must be one complete JSON object, e.g. {"question": "...", "answer": "..."}'
HINT_OBJECT = 'each row must be a JSON object, e.g. {"question": "...", "answer": "..."}'
HINT_HF = (
    "check the name on huggingface.co/datasets (owner/name, or owner/name:config); offline, "
    "the dataset must already be in the Hugging Face cache (HF_DATASETS_OFFLINE=1 uses only the "
    "cache); gated datasets need HF_TOKEN set"
)
HINT_SURROGATE = ("a \\ud800-\\udfff escape is half of a UTF-16 pair, not a character: re-export the file from "
                  "valid text (e.g. json.dumps(row, ensure_ascii=False))")
# Training reads JSON with Arrow: whole numbers are 64-bit, and NaN/Infinity are not JSON.
INT64 = (-(2**63), 2**63 - 1)
_SURROGATE = re.compile("[\ud800-\udfff]")


class _BadLiteral(ValueError):
    """A JSON value Python's reader takes but training's refuses (NaN, Infinity, a huge integer)."""


def _refuse_constant(name: str):
    raise _BadLiteral(f"{name} is not valid JSON (training refuses it)")


def _checked_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > 19 or not INT64[0] <= int(text) <= INT64[1]:
        shown = text if len(text) <= 24 else f"{text[:12]}…{text[-4:]}"
        raise _BadLiteral(f"number {shown} ({digits} digits) is beyond 64 bits: training would read it as "
                          "a float and change its digits")
    return int(text)


def _checked_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 24 else f"{text[:12]}…{text[-4:]}"
        raise _BadLiteral(f"number {shown} is too large for a float (it would train as 'inf')")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_checked_int, parse_float=_checked_float)
HINT_LITERAL = "write it as a string (\"NaN\", \"123...\") or drop it"


# --- Results -------------------------------------------------------------------------------------


@dataclass
class DatasetIssue:
    """One problem, located as precisely as the format allows (line None: whole file/row count)."""

    file: str
    line: int | None
    column: str | None
    message: str
    hint: str | None = None

    def where(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"

    def format(self) -> str:
        """`file:line: column: message`, then the hint indented on its own line."""
        head = ": ".join(p for p in (self.where(), self.column, self.message) if p is not None)
        return f"{head}\n    {self.hint}" if self.hint else head


@dataclass
class DatasetReport:
    """What `check_dataset` found. Data problems are issues here, never exceptions."""

    source: str
    kind: str | None
    rows: int
    columns: list[str]
    issues: list[DatasetIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def format(self) -> str:
        """Human text for `aitk dataset check`: one line per issue, then a one-line verdict."""
        lines = [issue.format() for issue in self.issues]
        columns = ", ".join(self.columns) or "(none)"
        if self.ok:
            lines.append(f"{self.source}: ok, {self.rows} rows, columns: {columns}")
        else:
            n = len(self.issues)
            lines.append(f"{self.source}: {n} issue{'s' if n != 1 else ''} ({self.rows} rows read)")
        return "\n".join(lines)


@dataclass
class LoadedDataset:
    rows: list[dict]
    columns: list[str]
    source: str
    kind: str  # "jsonl", "json", "csv", "parquet" or "hf"
    lines: list[int | None] = field(default_factory=list)  # each row's line in the file (None: no lines)

    def __len__(self) -> int:
        return len(self.rows)


class DatasetError(AitkError):
    """A dataset that cannot be read at all; `.issues` has every problem found, located."""

    def __init__(self, issues: list[DatasetIssue]):
        first = issues[0]
        message = f"{first.where()}: {first.message}"
        if len(issues) > 1:
            message += f" (and {len(issues) - 1} more issue{'s' if len(issues) > 2 else ''})"
        super().__init__(message, first.hint)
        self.issues = issues


# --- Issue collection ----------------------------------------------------------------------------


class _Issues:
    """Collects issues, listing the first few of each kind then a count, so one bad column in
    100 000 rows gives a readable report instead of 100 000 lines."""

    def __init__(self, file: str):
        self.file = file
        self._items: list[tuple[str, DatasetIssue]] = []
        self._counts: dict[str, int] = {}
        self._labels: dict[str, str] = {}

    def add(self, message, *, line=None, column=None, hint=None, kind=None, label=None) -> None:
        kind = kind or message
        self._counts[kind] = self._counts.get(kind, 0) + 1
        if label:
            self._labels.setdefault(kind, label)
        if self._counts[kind] <= MAX_PER_KIND:
            self._items.append((kind, DatasetIssue(self.file, line, column, message, hint)))

    def __bool__(self) -> bool:
        return bool(self._items)

    def done(self) -> list[DatasetIssue]:
        """Issues in file order (whole-file ones first), each kind's count after its last line."""
        out: list[DatasetIssue] = []
        shown: dict[str, int] = {}
        for kind, issue in sorted(self._items, key=lambda item: item[1].line or 0):
            out.append(issue)
            shown[kind] = shown.get(kind, 0) + 1
            total = self._counts[kind]
            if shown[kind] == MAX_PER_KIND and total > MAX_PER_KIND:
                label = self._labels.get(kind, "issues like this")
                out.append(
                    DatasetIssue(
                        self.file,
                        None,
                        issue.column,
                        f"{total} {label} in total (first {MAX_PER_KIND} listed above)",
                    )
                )
        return out


@dataclass
class _Parsed:
    """A source read as far as possible: rows (with their line numbers) plus reading issues."""

    source: str
    kind: str | None
    issues: _Issues
    rows: list[dict] = field(default_factory=list)
    lines: list[int | None] = field(default_factory=list)
    columns: list[str] | None = None  # None: the union of the rows' keys
    bad_lines: set[int] = field(default_factory=set)  # not UTF-8: already reported

    def add(self, value: Any, line: int | None) -> None:
        if isinstance(value, dict):
            bad = _lone_surrogate(value)
            if bad is not None:
                self.issues.add(f"text holds a lone surrogate (\\u{ord(bad):04x}): not valid Unicode", line=line,
                                hint=HINT_SURROGATE, kind="surrogate", label="rows with lone surrogates")
                return
            self.rows.append(value)
            self.lines.append(line)
            return
        name = _TYPE_NAMES.get(type(value), type(value).__name__)
        self.issues.add(
            f"row is {name}, not a JSON object",
            line=line,
            hint=HINT_OBJECT,
            kind="not-object",
            label="rows that are not objects",
        )

    def full(self, max_rows: int | None) -> bool:
        return max_rows is not None and len(self.rows) >= max_rows

    def column_names(self) -> list[str]:
        if self.columns is not None:
            return list(self.columns)
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)


def _lone_surrogate(value: Any) -> str | None:
    """The first half-of-a-pair character in any key or string of a JSON value (no recursion:
    the value may be nested as deep as the JSON reader allows)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            m = _SURROGATE.search(v)
            if m:
                return m.group()
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


# --- Reading -------------------------------------------------------------------------------------


def is_file_source(source: str | Path) -> bool:
    """A local data file, by its extension; anything else names a Hugging Face dataset."""
    return Path(source).suffix.lower() in KINDS


def _looks_like_hf_id(source: str | Path) -> bool:
    """`name`, `owner/name` or `owner/name:config`, and not something meant as a local file."""
    if isinstance(source, Path):
        return False
    return Path(source).suffix.lower() not in KINDS and _HF_ID.fullmatch(source) is not None


def local_file(source: str, base: Path) -> Path | None:
    """The data file `source` names (relative to `base`), checked to be a readable dataset; None
    when it names a Hugging Face dataset. A path that exists, or that looks like one (absolute,
    `./`, `~`, a data-file extension, more than one `/`), is never taken as a hub name."""
    path = Path(source).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError):
        exists = is_dir = False
    if not exists:
        if _looks_like_hf_id(source):
            return None
        raise AitkError(f"dataset file not found: {path}",
                        "give an existing .jsonl/.json/.csv/.parquet file, or a Hugging Face dataset id "
                        "(owner/name or owner/name:config)")
    if is_dir:
        raise AitkError(f"{path} is a folder, not a data file", "give a .jsonl, .json, .csv or .parquet file")
    if path.suffix.lower() not in KINDS:
        raise AitkError(f"{path} is not a dataset file (type '{path.suffix or '(none)'}')",
                        "give a .jsonl (one JSON object per line), .json, .csv or .parquet file")
    report = check_dataset(path)
    if not report.ok:
        first = report.issues[0]
        raise AitkError(f"{first.where()}: {first.message}", first.hint or "fix the dataset and retry")
    return path


def _parse(source: str | Path, split: str, max_rows: int | None) -> _Parsed:
    name = str(source)
    path = Path(name).expanduser()
    issues = _Issues(name)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError):  # names with NUL bytes, too long for the filesystem...
        exists = is_dir = False
    if is_dir:
        issues.add("is a folder, not a data file", hint="point at a .jsonl, .json, .csv or .parquet file")
        return _Parsed(name, None, issues)
    if exists:
        return _parse_file(path, name, max_rows, issues)
    if _looks_like_hf_id(source):
        return _parse_hf(name, split, max_rows, issues)
    issues.add(
        "file not found",
        hint="check the path; a Hugging Face dataset id looks like owner/name or owner/name:config",
    )
    return _Parsed(name, None, issues)


def _parse_file(path: Path, name: str, max_rows: int | None, issues: _Issues) -> _Parsed:
    kind = KINDS.get(path.suffix.lower())
    parsed = _Parsed(name, kind, issues)
    if kind is None:
        issues.add(
            f"unsupported file type '{path.suffix or '(none)'}'",
            hint="use .jsonl (one JSON object per line), .json, .csv or .parquet",
        )
        return parsed
    try:
        if path.stat().st_size == 0:
            issues.add("file is empty", hint="add rows: " + HINT_JSONL)
            return parsed
        if kind == "parquet":
            _read_parquet(path, parsed, max_rows)
        else:
            text = _decode(path.read_bytes(), parsed)
            if not text.strip():
                issues.add("file is empty (only whitespace)", hint="add one row per line")
                return parsed
            if kind == "csv":
                _read_csv(text, parsed, max_rows)
            elif kind == "json" and text.startswith("[", _JSON_WS.match(text).end()):
                _read_json_array(text, parsed, max_rows)
            else:
                _read_json_lines(text, parsed, max_rows)
    except OSError as exc:
        issues.add(f"cannot read the file ({exc.strerror or exc})", hint="check the file's permissions")
        return parsed
    if not parsed.rows and not issues and max_rows != 0:
        issues.add("no rows", hint="the file has no data rows")
    return parsed


def _decode(data: bytes, parsed: _Parsed) -> str:
    """UTF-8 text (a leading BOM dropped). Bad bytes are reported per line and replaced, so the
    rest of the file can still be checked. UTF-8 never uses the byte of '\\n' inside a character,
    so decoding line by line finds exactly the bad lines."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            parsed.bad_lines.add(number)
            parsed.issues.add(
                f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {offset + exc.start}"
                f" (byte {exc.start + 1} of the line)",
                line=number,
                hint=HINT_UTF8,
                kind="utf8",
                label="lines that are not valid UTF-8",
            )
        offset += len(raw) + 1
    return data.decode("utf-8-sig", errors="replace")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) without building a list: a preview of a big file stops early."""
    start, number = 0, 1
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield number, text[start:end]
        start, number = end + 1, number + 1


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"invalid JSON ({exc.msg}: column {exc.colno})"


def _read_json_lines(text: str, parsed: _Parsed, max_rows: int | None) -> None:
    issues = parsed.issues
    for number, line in _lines(text):
        if not line.strip() or number in parsed.bad_lines:
            continue
        try:
            value = _DECODER.decode(line)
        except json.JSONDecodeError as exc:
            hint = HINT_JSONL
            if number == 1 and line.strip() == "[":
                hint = "this looks like one JSON array: name the file .json, or write one object per line"
            issues.add(_json_error(exc), line=number, hint=hint, kind="json", label="lines with invalid JSON")
            continue
        except _BadLiteral as exc:
            issues.add(str(exc), line=number, hint=HINT_LITERAL, kind="literal", label="lines with such values")
            continue
        except RecursionError:
            issues.add("JSON nested too deeply", line=number, hint=HINT_JSONL, kind="json")
            continue
        parsed.add(value, number)
        if parsed.full(max_rows):
            return


def _read_json_array(text: str, parsed: _Parsed, max_rows: int | None) -> None:
    """A `[ {...}, {...} ]` file, decoded element by element so each row keeps its line number."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_of(pos: int) -> int:
        return bisect.bisect_right(starts, pos)

    def fail(message: str, pos: int, hint: str = "the file must be one JSON array of objects") -> None:
        parsed.issues.add(message, line=line_of(pos), hint=hint)

    decoder = _DECODER
    pos = _JSON_WS.match(text, _JSON_WS.match(text).end() + 1).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                return fail(_json_error(exc), exc.pos)
            except _BadLiteral as exc:
                return fail(str(exc), pos, HINT_LITERAL)
            except RecursionError:
                return fail("JSON nested too deeply", pos)
            parsed.add(value, line_of(pos))
            if parsed.full(max_rows):
                return
            pos = _JSON_WS.match(text, end).end()
            if text.startswith(",", pos):
                pos = _JSON_WS.match(text, pos + 1).end()
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                column = pos - starts[line_of(pos) - 1] + 1
                return fail(f"invalid JSON (Expecting ',' delimiter: column {column})", pos)
    pos = _JSON_WS.match(text, pos).end()
    if pos < len(text):
        fail("invalid JSON (extra data after the closing ']')", pos)


def _csv_delimiter(text: str) -> str:
    """Comma, unless the header line clearly uses ';' or tab (spreadsheet exports do)."""
    header = text.split("\n", 1)[0]
    return max((",", ";", "\t"), key=lambda d: (header.count(d), d == ","))


def _read_csv(text: str, parsed: _Parsed, max_rows: int | None) -> None:
    issues = parsed.issues
    # Training texts are long; the default 128 KiB field limit would reject real data.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_csv_delimiter(text))
    header: list[str] | None = None
    previous_end = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            issues.add(f"unreadable CSV ({exc})", line=reader.line_num, hint="check the quoting on this line")
            break
        line, previous_end = previous_end + 1, reader.line_num
        if not record:
            continue
        if header is None:
            header = record
            parsed.columns = header
            _check_header(header, line, issues)
            continue
        if len(record) != len(header):
            issues.add(
                f"{len(record)} fields, but the header has {len(header)}",
                line=line,
                hint='quote values that contain the delimiter or a line break: "a, b"',
                kind="ragged",
                label="rows with the wrong number of fields",
            )
            continue
        parsed.add(dict(zip(header, record)), line)
        if parsed.full(max_rows):
            return


def _check_header(header: list[str], line: int, issues: _Issues) -> None:
    seen: set[str] = set()
    for index, name in enumerate(header, start=1):
        if not name.strip():
            issues.add(f"header field {index} has no name", line=line, hint="name every column in the first line")
        elif name in seen:
            issues.add(f"column '{name}' appears twice in the header", line=line, column=name,
                       hint="give every column a unique name")
        seen.add(name)


def _read_parquet(path: Path, parsed: _Parsed, max_rows: int | None) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        if max_rows is not None:
            table = table.slice(0, max_rows)
        rows = table.to_pylist()
    except Exception as exc:  # pyarrow raises many types (ArrowInvalid, OSError...) for bad files
        parsed.issues.add(
            f"not a readable Parquet file ({_first_line(exc)})",
            hint="re-export it, e.g. with pandas DataFrame.to_parquet()",
        )
        return
    parsed.columns = table.column_names
    for row in rows:
        parsed.add(row, None)


def _parse_hf(source: str, split: str, max_rows: int | None, issues: _Issues) -> _Parsed:
    parsed = _Parsed(source, "hf", issues)
    name, _, config = source.partition(":")
    try:
        import datasets
    except ImportError:
        issues.add("cannot load Hugging Face datasets: the `datasets` package is not installed",
                   hint="pip install datasets")
        return parsed
    split_spec = split if max_rows is None else f"{split}[:{max_rows}]"
    try:
        dataset = datasets.load_dataset(name, config or None, split=split_spec)
        rows = dataset.to_list()
        columns = list(dataset.column_names)
    except Exception as exc:  # network, not found, gated, unknown split: all mean "cannot load"
        issues.add(
            f"could not load Hugging Face dataset '{source}' (split '{split}'): "
            f"{type(exc).__name__}: {_first_line(exc)}",
            hint=HINT_HF,
        )
        return parsed
    parsed.columns = columns
    for row in rows:
        parsed.add(row, None)
    return parsed


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Public: load and check ----------------------------------------------------------------------


def load_rows(source: str | Path, split: str = "train", max_rows: int | None = None) -> LoadedDataset:
    """Rows of a local .jsonl/.json/.csv/.parquet file or a Hugging Face dataset id.

    Raises DatasetError (an AitkError) when the data cannot be read as rows: missing or empty
    file, invalid JSON or UTF-8, rows that are not objects, ragged CSV. Column problems are for
    `check_dataset` to report.
    """
    parsed = _parse(source, split, max_rows)
    issues = parsed.issues.done()
    if issues:
        raise DatasetError(issues)
    assert parsed.kind is not None
    return LoadedDataset(parsed.rows, parsed.column_names(), str(source), parsed.kind, parsed.lines)


def check_dataset(
    source: str | Path,
    *,
    text_template: str | None = None,
    text_columns: list[str] | None = None,
    split: str = "train",
    max_rows: int | None = None,
) -> DatasetReport:
    """Everything wrong with a dataset for training on `text_template` (or `text_columns`).

    Never raises for data problems: they are issues in the report, located to the line.
    """
    parsed = _parse(source, split, max_rows)
    columns = parsed.column_names()
    checks = _Issues(str(source))
    readable = bool(parsed.rows or parsed.columns)  # else column checks would only add noise
    required = _required_columns(columns, text_template, text_columns, checks, readable)
    _check_values(parsed, required, checks)
    if parsed.kind in ("json", "jsonl"):
        _check_column_types(parsed, checks)
    return DatasetReport(
        source=str(source),
        kind=parsed.kind,
        rows=len(parsed.rows),
        columns=columns,
        issues=parsed.issues.done() + checks.done(),
    )


def _required_columns(
    columns: list[str],
    template: str | None,
    text_columns: list[str] | None,
    issues: _Issues,
    report_absent: bool,
) -> list[str]:
    """Columns every row must fill; ones absent from the whole dataset are reported once here
    (when `report_absent`), not once per row."""
    wanted: list[str] = []
    available = ", ".join(columns) or "(none)"
    if template is not None:
        try:
            fields = grammar.fields(grammar.check(template))
        except AitkError as exc:
            issues.add(f"text template: {exc.message}", hint=exc.hint)
            fields = []
        for name in fields:
            if report_absent and name not in columns:
                issues.add(
                    f"template field {{{name}}} is not a column (columns: {available})",
                    column=name,
                    hint="rename the field in the template, or the column in the data",
                )
        wanted += fields
    for name in text_columns or []:
        if report_absent and name not in columns:
            issues.add(f"column not found (columns: {available})", column=name,
                       hint="check the column name and its case")
        wanted.append(name)
    return [name for name in dict.fromkeys(wanted) if name in columns]


def _check_values(parsed: _Parsed, required: list[str], issues: _Issues) -> None:
    """Each value the template inserts must be text (or a number or boolean): training would
    write `None` for a null and a Python repr for an object or array."""
    for index, (row, line) in enumerate(zip(parsed.rows, parsed.lines)):
        where = "" if line is not None else f" (row {index + 1})"
        for name in required:
            value = row.get(name, _MISSING)
            if value is _MISSING:
                problem = ("missing from this row", "every row needs the template's columns; fill them in or "
                           "drop the row", "missing", f"rows missing column '{name}'")
            elif value is None:
                problem = ("null value", "training would insert the text 'None'; fill it in or drop the row",
                           "null", f"rows with a null '{name}'")
            elif isinstance(value, (dict, list)):
                problem = (f"is {_TYPE_NAMES.get(type(value), 'an object')}, not text",
                           "a text column must hold a string; flatten it into text or drop the row",
                           "nested", f"rows with a non-text '{name}'")
            elif isinstance(value, str) and not value.strip():
                problem = ("empty value", "an empty field trains on nothing; fill it in or drop the row",
                           "empty", f"rows with an empty '{name}'")
            else:
                continue
            message, hint, kind, label = problem
            issues.add(f"{message}{where}", line=line, column=name, hint=hint, kind=f"{kind}:{name}", label=label)


_MISSING = object()
# Whole and decimal numbers apart: Arrow reads a column of both as floats, so 3 would train as "3.0".
_JSON_KIND = {str: "a string", bool: "a boolean", int: "a whole number", float: "a decimal number",
              dict: "an object", list: "an array"}


def _check_column_types(parsed: _Parsed, issues: _Issues) -> None:
    """Training loads JSON into Arrow columns of one type each: a column that is a string in one
    row and a number or object in another fails there, so it fails here first."""
    first: dict[str, tuple[str, int | None]] = {}
    for row, line in zip(parsed.rows, parsed.lines):
        for name, value in row.items():
            kind = _JSON_KIND.get(type(value))
            if kind is None:
                continue
            seen = first.setdefault(name, (kind, line))
            if seen[0] != kind:
                since = f" (line {seen[1]})" if seen[1] is not None else ""
                issues.add(f"is {kind} here but {seen[0]} in the first row that has it{since}", line=line,
                           column=name, hint="a column must have one type in every row: quote numbers as "
                           "strings, or make all rows alike", kind=f"mixed:{name}", label=f"rows where '{name}' "
                           "changes type")


# --- Templates -----------------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    """A value as a chat message's text (None: nothing)."""
    return "" if value is None else format(value, "")


def preview(source: str | Path, template: str, n: int = 5, split: str = "train") -> list[str]:
    """The first `n` rows as the model will see them; reads no further than it must."""
    grammar.check(template)
    return [grammar.render(template, row) for row in load_rows(source, split, max_rows=n).rows]


@functools.lru_cache(maxsize=16)
def _compile_chat_template(chat_template: str):
    """Compiled as transformers does (sandboxed, same options and helpers), so a model's own
    template renders here exactly as in training."""
    import datetime

    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(chat_template)
    except jinja2.TemplateError as exc:
        raise AitkError(f"chat template does not compile: {exc}",
                        hint="check the model's chat_template (Jinja)") from None


def render_chat(
    row: dict,
    chat_template: str,
    user_column: str,
    assistant_column: str,
    system_prompt: str | None = None,
    **variables: Any,
) -> str:
    """One row as a user/assistant exchange through a model's Jinja chat template.

    `variables` reach the template too (e.g. bos_token="<s>", which many templates use).
    """
    import jinja2

    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for role, column in (("user", user_column), ("assistant", assistant_column)):
        if column not in row:
            raise AitkError(f"row has no column '{column}' for the {role} message",
                            hint=f"columns: {', '.join(map(str, row)) or '(none)'}")
        messages.append({"role": role, "content": _format_value(row[column])})
    template = _compile_chat_template(chat_template)
    try:
        return template.render(messages=messages, add_generation_prompt=False, **variables)
    except jinja2.TemplateError as exc:
        raise AitkError(f"chat template failed: {exc}", hint="check the model's chat_template") from None


def load_chat_template(model_dir: str | Path) -> str:
    """A model folder's chat template: `chat_template.jinja` (newer transformers saves it
    there) or the `chat_template` entry of `tokenizer_config.json`."""
    folder = Path(model_dir)
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise AitkError(f"{folder} has no chat template",
                        hint="use a text template instead, or a model with a chat template")
    return template


# --- Token lengths -------------------------------------------------------------------------------


def load_tokenizer(model_dir: str | Path):
    """The fast tokenizer of a model folder (its `tokenizer.json`), or of that file itself."""
    from tokenizers import Tokenizer

    path = Path(model_dir)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise AitkError(f"no tokenizer found at {path}",
                        hint="the model folder needs a tokenizer.json (a fast tokenizer)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        raise AitkError(f"cannot read tokenizer {path}: {_first_line(exc)}") from None


@dataclass
class TokenStats:
    """Token lengths of a dataset's texts, to pick max_length and see what would be cut."""

    count: int
    min: int
    max: int
    mean: float
    p50: int
    p95: int
    over_limit: int  # rows longer than max_length: training truncates them
    max_length: int
    lengths: list[int] = field(default_factory=list, repr=False)

    def histogram(self, bins: int = 10) -> list[tuple[int, int, int]]:
        """(lo, hi, count) per bin, half-open [lo, hi), of equal integer width covering
        min..max; fewer than `bins` bins when the range is narrower than that."""
        if not self.lengths or bins < 1:
            return []
        span = self.max - self.min + 1
        width = math.ceil(span / bins)
        counts = [0] * math.ceil(span / width)
        for length in self.lengths:
            counts[(length - self.min) // width] += 1
        return [(self.min + i * width, self.min + (i + 1) * width, c) for i, c in enumerate(counts)]


def token_stats(texts: Iterable[str], tokenizer, max_length: int) -> TokenStats:
    """Token counts as training will see them (special tokens included, nothing truncated)."""
    texts = list(texts)
    tokenizer = _untruncated(tokenizer)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)] if texts else []
    if not lengths:
        return TokenStats(0, 0, 0, 0.0, 0, 0, 0, max_length, [])
    ordered = sorted(lengths)
    return TokenStats(
        count=len(lengths),
        min=ordered[0],
        max=ordered[-1],
        mean=sum(lengths) / len(lengths),
        p50=_percentile(ordered, 50),
        p95=_percentile(ordered, 95),
        over_limit=sum(1 for n in lengths if n > max_length),
        max_length=max_length,
        lengths=lengths,
    )


def _untruncated(tokenizer):
    """A tokenizer set to truncate or pad would hide true lengths; measure with a copy instead
    of changing the caller's."""
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _percentile(ordered: list[int], p: float) -> int:
    """Nearest-rank percentile: always an actual length, never an interpolated one."""
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]
