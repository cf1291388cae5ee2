"""Reading manifest files while keeping where every value came from.

YAML is composed into nodes and turned into plain Python values by hand, so that each value's line and column
(from the node marks) are kept in a :class:`SourceMap`. Spreadsheets (CSV, XLSX) are streamed row by row with
their row numbers as a spreadsheet program shows them (the header is row 1), so memory stays flat on large files.
"""

from __future__ import annotations

import codecs
import csv
import os
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from jimeng_batch.errors import Location, ManifestError, Problem, SchemaError, describe, printable
from jimeng_batch.intake import bounds
from jimeng_batch.yaml_bounds import BoundedLoader, YamlTooBig, check_bounds

PathKey = tuple[str | int, ...]

SPREADSHEET_SUFFIXES = (".csv", ".xlsx")
YAML_SUFFIXES = (".yaml", ".yml")
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


@dataclass
class SourceMap:
    """Line/column of every value (and of every mapping key) of one YAML document, by path."""

    file: str
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        """The location of the value at ``path`` (or of its key), else of its nearest located ancestor."""
        if key and path in self.keys:
            line, column = self.keys[path]
            return Location(self.file, line, column)
        probe = tuple(path)
        while probe:
            if probe in self.values:
                line, column = self.values[probe]
                return Location(self.file, line, column)
            probe = probe[:-1]
        line, column = self.values.get((), (1, 1))
        return Location(self.file, line, column)


@dataclass(frozen=True)
class YamlDocument:
    """A YAML file's data and where each value is."""

    path: Path
    data: Any
    where: SourceMap
    problems: list[Problem] = field(default_factory=list)  # found reading it; the data is still usable
    unreadable: frozenset[PathKey] = frozenset()  # where the values of those problems are


def display_path(path: Path) -> str:
    """The path as the user would recognise it: relative to the working directory when it is below it."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:  # a different drive on Windows
        return str(path)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ManifestError(f"{display_path(path)}: no such file") from exc
    except IsADirectoryError as exc:
        raise ManifestError(f"{display_path(path)}: is a folder, not a manifest file") from exc
    except UnicodeDecodeError as exc:
        raise not_utf8(path, display_path(path), "") from exc
    except OSError as exc:
        raise ManifestError(f"{display_path(path)}: cannot be read ({exc.strerror})") from exc


def not_utf8(path: Path, shown: str, advice: str) -> ManifestError:
    """The error for a file that is not UTF-8, located at the line and column of its first bad byte."""
    try:
        found = _first_bad_utf8(path)
    except OSError:
        found = None
    if found is None:
        return ManifestError(f"{shown}: not UTF-8 text{advice}")
    line, column, offset, reason = found
    with path.open("rb") as handle:
        head = handle.read(2)
    if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        advice = "; it looks like UTF-16" + (advice or "; save it as UTF-8")
    return SchemaError([Problem(Location(shown, line, column),
                                f"not UTF-8 text ({reason} at byte {offset}){advice}")])


def _first_bad_utf8(path: Path, chunk_size: int = 1 << 20) -> tuple[int, int, int, str] | None:
    """Line, column (in characters), byte offset and reason of the first invalid UTF-8 in a file, streamed."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0  # bytes fed to the decoder before the current chunk
    line, column = 1, 1
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(chunk_size)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                good = bytes(exc.object[:exc.start]).decode("utf-8", "replace")
                newlines = good.count("\n")
                if newlines:
                    line, column = line + newlines, len(good) - good.rfind("\n")
                else:
                    column += len(good)
                return line, column, consumed - pending + exc.start, str(exc.reason)
            newlines = text.count("\n")
            if newlines:
                line, column = line + newlines, len(text) - text.rfind("\n")
            else:
                column += len(text)
            if not chunk:
                return None
            consumed += len(chunk)


class _Builder:
    """Turns composed YAML nodes into Python values, recording each value's position.

    Aliases and merge keys (``<<``) are expanded here, once :func:`check_bounds` has said the expansion is small.
    """

    def __init__(self, loader: yaml.SafeLoader, where: SourceMap) -> None:
        self.loader = loader
        self.where = where
        self.problems: list[Problem] = []
        self.unreadable: set[PathKey] = set()  # values said to be unreadable: no schema problem about them too

    def build(self, node: Node, path: PathKey) -> Any:
        self.where.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, (MappingNode, SequenceNode)) and node.tag not in (_MAP_TAG, _SEQ_TAG):
            # `!!python/object/apply:...` and friends: the safe loader builds no objects, and neither does this
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self._problem(node, f"cannot read value: the tag {describe(tag)} is not allowed in a manifest")
            self.unreadable.add(path)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        value, readable = self._scalar(node)
        if not readable:
            self.unreadable.add(path)
        return value

    def _scalar(self, node: Node) -> tuple[Any, bool]:
        """The scalar's value, and whether it could be read (else its text, and a problem said)."""
        assert isinstance(node, ScalarNode)
        # YAML 1.1 reads an unquoted 16:9 as the base-60 integer 969; a ratio is what was meant.
        if node.tag in (_INT_TAG, _FLOAT_TAG) and ":" in node.value:
            return node.value, True
        try:
            value = self.loader.construct_object(node, deep=True)
        except ConstructorError as exc:
            problem = f"cannot read value: {exc.problem}"
        except ValueError as exc:  # a date like 2024-13-45; an integer of more than 4300 digits
            problem = (f"cannot read value: a number of {len(node.value)} characters is far too large"
                       if node.tag == _INT_TAG else f"cannot read value {describe(node.value)}: {exc}")
        else:
            if not isinstance(value, str):
                return value, True
            try:
                value.encode("utf-8")
                return value, True
            except UnicodeEncodeError as exc:  # "\ud800": half of a UTF-16 pair, which no text can hold
                half = f"\\u{ord(value[exc.start]):04x}"
                problem = (f"the text holds {half}, half of a UTF-16 surrogate pair, which is not a character; "
                           "write the character itself, or its code point as \\U0001F600")
                self._problem(node, problem)
                return value.encode("utf-8", "replace").decode("utf-8"), False  # checked on, never sent
        self._problem(node, problem)
        return node.value, False

    def _problem(self, node: Node, problem: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(Location(self.where.file, mark.line + 1, mark.column + 1), problem))

    def _merged(self, node: Node, path: PathKey) -> dict[str, Any]:
        """The entries a merge key (``<<: *a`` or ``<<: [*a, *b]``) brings in; the earlier mapping wins."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in sources:
            if not isinstance(source, MappingNode):
                mark = source.start_mark
                shown = describe(source.value) if isinstance(source, ScalarNode) else "a list"
                self.problems.append(Problem(
                    Location(self.where.file, mark.line + 1, mark.column + 1),
                    f"a merge (<<) takes a mapping or a list of them, like `<<: *defaults`; got {shown}"))
                continue
            for key, value in self._mapping(source, path).items():  # no cycle: check_bounds refuses them
                merged.setdefault(key, value)
        return merged

    def _mapping(self, node: MappingNode, path: PathKey) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged |= {k: v for k, v in self._merged(value_node, path).items() if k not in merged}
                continue
            key = self._scalar(key_node)[0] if isinstance(key_node, ScalarNode) else None
            location = Location(self.where.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key, (str, int, float, bool)) or isinstance(key, bool):
                self.problems.append(Problem(location, "a key must be a plain name"))
                continue
            key = str(key)
            if key in result:
                first = self.where.keys[(*path, key)]
                self.problems.append(
                    Problem(location, f"duplicate key {describe(key)} (first given at line {first[0]}); give each "
                                      "key once")
                )
                continue  # the first one stands, and is checked with the rest
            self.where.keys[(*path, key)] = (location.line or 1, location.column or 1)
            result[key] = self.build(value_node, (*path, key))
        # A key written here overrides the one merged in with `<<`; merged entries come first, as written.
        return {**{k: v for k, v in merged.items() if k not in result}, **result}


def _code_point(character: int | str) -> int:
    return character if isinstance(character, int) else ord(character)


def load_yaml(path: Path) -> YamlDocument:
    """Parse one YAML file. Syntax errors and the bounds are one located problem (nothing else can be read);
    duplicate keys and unreadable values are located problems in ``.problems``, and the rest is still read."""
    shown = display_path(path)
    text = read_text(path)
    try:
        loader = BoundedLoader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other control characters)
        before = text[:exc.position]
        location = Location(shown, before.count("\n") + 1, exc.position - before.rfind("\n"))
        message = f"YAML error: character {_code_point(exc.character):#06x} is not allowed in YAML text"
        raise SchemaError([Problem(location, message)]) from exc
    where = SourceMap(shown)
    try:
        node = loader.get_single_node()
        if node is not None:
            check_bounds(node)
    except YamlTooBig as exc:
        raise SchemaError([Problem(Location(shown, exc.line, exc.column), exc.message)]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        location = Location(shown, mark.line + 1, mark.column + 1) if mark else Location(shown)
        raise SchemaError([Problem(location, f"YAML syntax error: {exc.problem or exc.context}")]) from exc
    except yaml.YAMLError as exc:
        raise SchemaError([Problem(Location(shown), f"YAML error: {exc}")]) from exc
    finally:
        loader.dispose()
    if node is None:
        raise SchemaError([Problem(Location(shown, 1, 1), "the file is empty; a manifest needs at least `jobs:`")])
    builder = _Builder(loader, where)
    data = builder.build(node, ())
    return YamlDocument(path, data, where, builder.problems, frozenset(builder.unreadable))


# --------------------------------------------------------------------------------------------------------------
# Spreadsheets
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SheetRow:
    """One data row: its number as a spreadsheet shows it, and its non-empty cells by column name."""

    number: int
    cells: dict[str, str]


def is_spreadsheet(path: Path) -> bool:
    return path.suffix.lower() in SPREADSHEET_SUFFIXES


def read_header(path: Path) -> list[str]:
    """The column names of a spreadsheet (its first row)."""
    for header in _iter_raw(path):
        return header
    return []


def iter_sheet(path: Path) -> Iterator[SheetRow]:
    """Stream the data rows of a CSV or XLSX file. Blank rows are skipped; blank cells are left out."""
    for chunk in iter_sheet_chunks(path):
        for number, values in chunk.records:
            row = chunk.row(number, values)
            if row is not None:
                yield row


@dataclass(frozen=True, slots=True)
class SheetChunk:
    """Consecutive records of a spreadsheet as read (each its row number and its cells, not yet stripped), for a
    reader that can tell many of them apart without reading each into a :class:`SheetRow`."""

    names: list[str]  # the header's column names, stripped
    records: list[tuple[int, list[str]]]
    all_named: bool  # every column has a name (worked out once, not per row)

    def row(self, number: int, values: list[str]) -> SheetRow | None:
        """One record as a :class:`SheetRow`; None for a blank row."""
        names = self.names
        # zip stops at the header's width: cells past it are counted below
        cells = {name: text for name, value in zip(names, values, strict=False)
                 if name and value is not None and (text := value.strip())}
        if len(values) > len(names):
            extra = [v for v in values[len(names):] if v is not None and v.strip()]
            if extra:
                cells["\0extra"] = str(len(extra))  # reported as a located problem by the row checks
        if not self.all_named:
            unnamed = [v for name, v in zip(names, values, strict=False) if not name and v is not None and v.strip()]
            if unnamed:  # a value under a blank header cell would otherwise be dropped without a word
                cells["\0unnamed"] = str(len(unnamed))
        return SheetRow(number, cells) if cells else None


SHEET_CHUNK_ROWS = 1000  # records per chunk: few enough to keep memory flat, enough to amortise a chunk's handling


def iter_sheet_chunks(path: Path, size: int | None = None) -> Iterator[SheetChunk]:
    """The records of a CSV or XLSX file below its header, ``size`` (default :data:`SHEET_CHUNK_ROWS`) at a time. A
    file that cannot be read past some record (broken quoting) gives the records before it, then raises."""
    size = size or SHEET_CHUNK_ROWS
    rows = _iter_raw(path)
    header = next(rows, None)
    if header is None:
        return
    names = [name.strip() for name in header]
    all_named = all(names)
    records: list[tuple[int, list[str]]] = []
    number = 1
    try:
        for values in rows:
            number += 1
            records.append((number, values))
            if len(records) >= size:
                yield SheetChunk(names, records, all_named)
                records = []
    except SchemaError:
        if records:
            yield SheetChunk(names, records, all_named)
        raise
    if records:
        yield SheetChunk(names, records, all_named)


def _iter_raw(path: Path) -> Iterator[list[str]]:
    shown = display_path(path)
    if not path.exists():
        raise ManifestError(f"{shown}: no such file")
    if path.suffix.lower() == ".csv":
        yield from _iter_csv(path, shown)
    elif path.suffix.lower() == ".xlsx":
        yield from _iter_xlsx(path, shown)
    else:
        raise ManifestError(f"{shown}: not a spreadsheet; use .csv or .xlsx")


def _iter_csv(path: Path, shown: str) -> Iterator[list[str]]:
    try:
        # utf-8-sig: spreadsheet programs often start a CSV export with a byte-order mark.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            # strict: a quote left open would otherwise read every row after it into one cell, silently.
            reader = csv.reader(handle, strict=True)
            header: list[str] = []
            record = 0
            while True:
                start = reader.line_num + 1  # the file line the next record starts on
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise _csv_error(path, shown, header, record + 1, start, exc) from exc
                record += 1
                if record == 1:
                    header = [name.strip() for name in values]
                yield values
    except UnicodeDecodeError as exc:
        raise not_utf8(path, shown, "; save it as CSV UTF-8") from exc
    except OSError as exc:
        raise ManifestError(f"{shown}: cannot be read ({exc.strerror})") from exc


def _csv_error(path: Path, shown: str, header: list[str], row: int, start: int, exc: csv.Error) -> SchemaError:
    """The located problem of a record the CSV reader refused: the row, column and line where its quoting broke."""
    found = _broken_quote(path, start)
    if found is None:
        return SchemaError([Problem(Location(shown, row=row), f"CSV error: {exc}")])
    field_index, line, unclosed = found
    name = header[field_index] if field_index < len(header) and header[field_index] else None
    where = Location(shown, row=row, column_name=name)
    cell = "" if name else f"in cell {field_index + 1} "
    if unclosed:
        message = (f"a quote (\") opened {cell}on line {line} is never closed, so every row after it would be read "
                   'into this cell; close it, or write "" for a quote inside a quoted cell')
    else:
        message = (f'text follows a closing quote (") {cell}on line {line}; quote the whole cell, and write "" '
                   "for each quote inside it")
    return SchemaError([Problem(where, message)])


def _broken_quote(path: Path, start: int) -> tuple[int, int, bool] | None:
    """For the record starting on file line ``start``: the index of the cell whose quoting breaks, the line it
    breaks on, and whether it is a quote never closed (else text after a closing quote). Streamed; read again
    only when a file has already failed."""
    cell, in_quotes, opened, after_quote = 0, False, (0, 0), False
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for number, text in enumerate(handle, start=1):
            if number < start:
                continue
            at_start = True
            index = 0
            while index < len(text):
                ch = text[index]
                if in_quotes:
                    if ch == '"' and text[index + 1:index + 2] == '"':
                        index += 1  # a doubled quote inside a quoted cell
                    elif ch == '"':
                        in_quotes, after_quote = False, True
                elif after_quote and ch not in ',\r\n':
                    return cell, number, False
                elif ch == '"' and at_start:
                    in_quotes, opened, at_start = True, (cell, number), False
                elif ch == ",":
                    cell, at_start, after_quote = cell + 1, True, False
                elif ch in "\r\n":
                    return None  # the record ended well here: the reader's complaint is not about quoting
                else:
                    at_start = False
                index += 1
    return (opened[0], opened[1], True) if in_quotes else None


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores 42 as 42.0
    return str(value)


def _check_parts(path: Path, shown: str) -> None:
    """Refuse a workbook with too many parts, or with a part that would unpack past the bound, before any of it is
    unpacked (and before its list of parts is read)."""
    declared = _declared_directory(path)
    if declared is not None:
        parts, size = declared
        if parts == _ZIP64_ENTRIES or size == _ZIP64_SIZE:
            raise ManifestError(f"{shown}: a ZIP64 archive (over 65,535 parts or 4 GiB), more than a workbook may be; "
                                "save the sheet as CSV, which is streamed")
        if parts > bounds.MAX_XLSX_PARTS or size > bounds.MAX_XLSX_DIRECTORY_BYTES:
            raise ManifestError(
                f"{shown}: it lists {parts:,} parts in {size / 2**20:,.1f} MiB, over the {bounds.MAX_XLSX_PARTS:,} "
                f"parts and {bounds.MAX_XLSX_DIRECTORY_BYTES / 2**20:,.0f} MiB a workbook may list (a workbook has "
                "tens); save the sheet as CSV, which is streamed")
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.file_size > bounds.MAX_XLSX_PART_BYTES:
                raise ManifestError(
                    f"{shown}: its part {printable(info.filename)} would unpack to {info.file_size / 2**20:,.0f} "
                    f"MiB, over the {bounds.MAX_XLSX_PART_BYTES / 2**20:,.0f} MiB a workbook part may have (a "
                    "sheet of a million rows needs about 150); save the sheet as CSV, which is streamed")


# The zip's end-of-central-directory record: its signature, then (after 6 bytes) the number of entries (2 bytes)
# and the directory's size (4 bytes), little-endian; at most a 64 KiB comment follows it.
_END_OF_DIRECTORY = b"PK\x05\x06"
_END_RECORD_BYTES = 22
_ZIP64_ENTRIES, _ZIP64_SIZE = 0xFFFF, 0xFFFFFFFF  # what a ZIP64 archive declares there: see its own record


def _declared_directory(path: Path) -> tuple[int, int] | None:
    """The part count and central directory size a zip's end record declares; None when no end record is found
    (openpyxl then says it is no zip)."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        tail_bytes = min(size, _END_RECORD_BYTES + 0xFFFF)
        handle.seek(size - tail_bytes)
        tail = handle.read(tail_bytes)
    at = tail.rfind(_END_OF_DIRECTORY)
    if at < 0 or len(tail) - at < _END_RECORD_BYTES:
        return None
    entries, directory = struct.unpack_from("<HI", tail, at + 10)
    return entries, directory


def _iter_xlsx(path: Path, shown: str) -> Iterator[list[str]]:
    import openpyxl  # imported here: only spreadsheet users pay for it
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        _check_parts(path, shown)
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ManifestError(f"{shown}: not a readable XLSX workbook ({exc})") from exc
    try:
        sheet = book.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield [_cell_text(v) for v in values]
    finally:
        book.close()
