"""Reading manifest files while keeping where every value came from.

YAML is composed into nodes and turned into plain Python values by hand, so that each value's line and column
(from the node marks) are kept in a :class:`SourceMap`. Spreadsheets (CSV, XLSX) are streamed row by row with
their row numbers as a spreadsheet program shows them (the header is row 1), so memory stays flat on large files.
"""

from __future__ import annotations

import codecs
import csv
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from jimeng_batch.errors import Location, ManifestError, Problem, SchemaError

PathKey = tuple[str | int, ...]

SPREADSHEET_SUFFIXES = (".csv", ".xlsx")
YAML_SUFFIXES = (".yaml", ".yml")
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


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
    """Turns composed YAML nodes into Python values, recording each value's position."""

    def __init__(self, loader: yaml.SafeLoader, where: SourceMap) -> None:
        self.loader = loader
        self.where = where
        self.problems: list[Problem] = []

    def build(self, node: Node, path: PathKey) -> Any:
        self.where.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: Node) -> Any:
        assert isinstance(node, ScalarNode)
        # YAML 1.1 reads an unquoted 16:9 as the base-60 integer 969; a ratio is what was meant.
        if node.tag in (_INT_TAG, _FLOAT_TAG) and ":" in node.value:
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except ConstructorError as exc:
            problem = f"cannot read value: {exc.problem}"
        except ValueError as exc:  # a date like 2024-13-45; an integer of more than 4300 digits
            problem = (f"cannot read value: a number of {len(node.value)} characters is far too large"
                       if node.tag == _INT_TAG else f"cannot read value '{node.value}': {exc}")
        mark = node.start_mark
        self.problems.append(Problem(Location(self.where.file, mark.line + 1, mark.column + 1), problem))
        return node.value

    def _mapping(self, node: MappingNode, path: PathKey) -> dict[str, Any]:
        merged = 0
        if any(key.tag == _MERGE_TAG for key, _ in node.value):
            own = sum(1 for key, _ in node.value if key.tag != _MERGE_TAG)
            self.loader.flatten_mapping(node)  # puts the merged entries first
            merged = len(node.value) - own
        result: dict[str, Any] = {}
        from_merge: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = self._scalar(key_node) if isinstance(key_node, ScalarNode) else None
            location = Location(self.where.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key, (str, int, float, bool)) or isinstance(key, bool):
                self.problems.append(Problem(location, "a key must be a plain name"))
                continue
            key = str(key)
            if index < merged:
                from_merge.add(key)
            elif key in from_merge:  # a key written here overrides the one merged in with `<<`
                from_merge.discard(key)
                del result[key]
            if key in result:
                first = self.where.keys[(*path, key)]
                self.problems.append(
                    Problem(location, f"duplicate key '{key}' (first given at line {first[0]}); give each key once")
                )
                continue
            self.where.keys[(*path, key)] = (location.line or 1, location.column or 1)
            result[key] = self.build(value_node, (*path, key))
        return result


def _code_point(character: int | str) -> int:
    return character if isinstance(character, int) else ord(character)


def load_yaml(path: Path) -> YamlDocument:
    """Parse one YAML file; syntax errors and duplicate keys are located problems."""
    shown = display_path(path)
    text = read_text(path)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other control characters)
        before = text[:exc.position]
        location = Location(shown, before.count("\n") + 1, exc.position - before.rfind("\n"))
        message = f"YAML error: character {_code_point(exc.character):#06x} is not allowed in YAML text"
        raise SchemaError([Problem(location, message)]) from exc
    where = SourceMap(shown)
    try:
        node = loader.get_single_node()
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
    if builder.problems:
        raise SchemaError(builder.problems)
    return YamlDocument(path, data, where)


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
    rows = _iter_raw(path)
    header = next(rows, None)
    if header is None:
        return
    names = [name.strip() for name in header]
    for offset, values in enumerate(rows):
        cells = {
            names[i]: value.strip()
            for i, value in enumerate(values)
            if i < len(names) and names[i] and value is not None and value.strip() != ""
        }
        extra = [v for v in values[len(names):] if v is not None and v.strip()]
        if extra:
            cells["\0extra"] = str(len(extra))  # reported as a located problem by the row checks
        unnamed = [v for name, v in zip(names, values, strict=False) if not name and v is not None and v.strip()]
        if unnamed:  # a value under a blank header cell would otherwise be dropped without a word
            cells["\0unnamed"] = str(len(unnamed))
        if cells:
            yield SheetRow(offset + 2, cells)


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
            reader = csv.reader(handle)
            try:
                yield from reader
            except csv.Error as exc:
                raise SchemaError([Problem(Location(shown, row=reader.line_num), f"CSV error: {exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise not_utf8(path, shown, "; save it as CSV UTF-8") from exc
    except OSError as exc:
        raise ManifestError(f"{shown}: cannot be read ({exc.strerror})") from exc


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores 42 as 42.0
    return str(value)


def _iter_xlsx(path: Path, shown: str) -> Iterator[list[str]]:
    import openpyxl  # imported here: only spreadsheet users pay for it
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ManifestError(f"{shown}: not a readable XLSX workbook ({exc})") from exc
    try:
        sheet = book.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield [_cell_text(v) for v in values]
    finally:
        book.close()
