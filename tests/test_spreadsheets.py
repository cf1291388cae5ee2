"""CSV and XLSX manifests, on their own and as a job's rows."""

from __future__ import annotations

import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import png, problems, summary_of

from jimeng_batch.errors import ManifestError
from jimeng_batch.intake.manifest import SpreadsheetOptions, load_manifest
from jimeng_batch.intake.plan import iter_distinct, summarize
from jimeng_batch.intake.sources import iter_sheet
from jimeng_batch.protocol.request_spec import RequestSpec


def specs(path: Path, options: SpreadsheetOptions | None = None) -> list[RequestSpec]:
    return [i for i in iter_distinct(load_manifest(path, options)) if isinstance(i, RequestSpec)]


def xlsx(path: Path, rows: list[list[object]]) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


CSV_TEXT = (
    "prompt,model,ratio,count,seed,var.animal\n"
    "a {animal},jimeng-4.0|jimeng-3.0,1:1,1,,cat|dog\n"
    "\n"
    "plain,,16:9,2,,\n"
    "fixed,,,1,42,\n"
)


def test_csv_manifest_one_row_per_request_with_lists(write: Callable[..., Path]) -> None:
    path = write("s.csv", CSV_TEXT)
    found = specs(path, SpreadsheetOptions(defaults={"model": "jimeng-4.5"}))
    assert [(s.prompt, s.model, s.source.row) for s in found] == [
        ("a cat", "jimeng-4.0", 2), ("a dog", "jimeng-4.0", 2), ("a cat", "jimeng-3.0", 2),
        ("a dog", "jimeng-3.0", 2), ("plain", "jimeng-4.5", 4), ("plain", "jimeng-4.5", 4), ("fixed", "jimeng-4.5", 5),
    ]
    assert found[-1].seed == 42 and found[-1].ratio == "1:1"
    assert found[4].ratio == "16:9" and found[4].key != found[5].key


def test_xlsx_manifest_matches_the_same_csv(write: Callable[..., Path], tmp_path: Path) -> None:
    csv_path = write("s.csv", CSV_TEXT)
    rows: list[list[object]] = [
        ["prompt", "model", "ratio", "count", "seed", "var.animal"],
        ["a {animal}", "jimeng-4.0|jimeng-3.0", "1:1", 1, None, "cat|dog"],
        [None, None, None, None, None, None],
        ["plain", None, "16:9", 2, None, None],
        ["fixed", None, None, 1, 42, None],
    ]
    xlsx_path = xlsx(tmp_path / "s.xlsx", rows)
    options = SpreadsheetOptions(defaults={"model": "jimeng-4.5"})
    assert [s.key for s in specs(xlsx_path, options)] == [s.key for s in specs(csv_path, options)]


def test_xlsx_errors_name_row_and_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = xlsx(tmp_path / "s.xlsx", [["prompt", "sample_strength"], ["a", 0.5], ["b", "lots"]])
    assert problems(path) == ["s.xlsx:row 3, column sample_strength: 'lots' is not a number"]


def test_a_corrupt_xlsx_is_a_clear_error(write: Callable[..., Path]) -> None:
    path = write("s.xlsx", "this is not a zip file")
    from jimeng_batch.errors import ManifestError

    with pytest.raises(ManifestError, match=r"^s.xlsx: not a readable XLSX workbook"):
        summary_of(path)


SHEET_PART = "xl/worksheets/sheet1.xml"


def _with_sheet(path: Path, parts: Iterator[bytes]) -> Path:
    """The workbook at ``path`` with its sheet's part replaced by ``parts``, packed as a zip packs them."""
    bombed = path.with_name("bombed.xlsx")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(bombed, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for info in source.infolist():
            if info.filename != SHEET_PART:
                out.writestr(info.filename, source.read(info))
        with out.open(SHEET_PART, "w", force_zip64=True) as handle:
            for part in parts:
                handle.write(part)
    return bombed


def test_an_xlsx_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = xlsx(tmp_path / "s.xlsx", [["prompt"], ["a lighthouse"]])
    one_mib = b"a" * (1 << 20)
    # 600 MiB of one cell's text in a file of 3 MB: openpyxl would hold all of it (and more) to read the row
    text = (b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1">'
            b'<c r="A1" t="inlineStr"><is><t>prompt</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>',
            *(one_mib for _ in range(600)), b"</t></is></c></row></sheetData></worksheet>")
    bombed = _with_sheet(path, iter(text))
    assert bombed.stat().st_size < 5 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError) as raised:
            summary_of(bombed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(raised.value) == ("bombed.xlsx: its part xl/worksheets/sheet1.xml would unpack to 600 MiB, over the 512 "
                                 "MiB a workbook part may have (a sheet of a million rows needs about 150); save "
                                 "the sheet as CSV, which is streamed")
    assert peak < 16 << 20


def test_an_xlsx_listing_too_many_parts_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A zip's list of parts is read whole into objects: a small file can list a million empty parts. The count is
    # read from the zip's end record, before that list
    monkeypatch.chdir(tmp_path)
    path = xlsx(tmp_path / "s.xlsx", [["prompt"], ["a lighthouse"]])
    listed = tmp_path / "listed.xlsx"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(listed, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        for i in range(10_001 - len(source.infolist())):
            target.writestr(f"xl/media/empty{i}.bin", b"")
    with pytest.raises(ManifestError) as raised:
        summary_of(listed)
    assert str(raised.value).startswith("listed.xlsx: it lists 10,001 parts in 0.6 MiB, over the 10,000 parts and 4 "
                                        "MiB a workbook may list (a workbook has tens); save the sheet as CSV")


def test_a_zip64_xlsx_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = bytearray(xlsx(tmp_path / "s.xlsx", [["prompt"], ["a lighthouse"]]).read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 10:end + 12] = b"\xff\xff"  # the part count a ZIP64 archive leaves to its own record
    (tmp_path / "big.xlsx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"^big\.xlsx: a ZIP64 archive \(over 65,535 parts or 4 GiB\)"):
        summary_of(tmp_path / "big.xlsx")


def test_an_xlsx_under_the_bound_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jimeng_batch.intake import bounds

    path = xlsx(tmp_path / "s.xlsx", [["prompt"], *([f"picture {i}"] for i in range(2000))])
    with zipfile.ZipFile(path) as archive:
        size = archive.getinfo(SHEET_PART).file_size
    monkeypatch.setattr(bounds, "MAX_XLSX_PART_BYTES", size)  # the bound itself is allowed
    assert len(specs(path)) == 2000
    monkeypatch.setattr(bounds, "MAX_XLSX_PART_BYTES", size - 1)
    with pytest.raises(ManifestError, match=r"part xl/worksheets/sheet1\.xml would unpack to 0 MiB, over the 0 MiB"):
        specs(path)


def test_rows_override_the_jobs_fields(write: Callable[..., Path]) -> None:
    write("rows.csv", "prompt,resolution\nfirst,\nsecond,1k\n")
    path = write("m.yaml", """
        jobs:
          - type: image
            rows: rows.csv
            resolution: 2k
            model: jimeng-4.0
            negative_prompt: blur
        """)
    found = specs(path)
    assert [(s.prompt, s.resolution, s.negative_prompt) for s in found] == [("first", "2k", "blur"),
                                                                           ("second", "1k", "blur")]
    assert [s.source.row for s in found] == [2, 3]
    assert found[0].source.file == "m.yaml" and found[0].source.job == "job-1"


def test_row_references_are_relative_to_the_spreadsheet(write: Callable[..., Path], tmp_path: Path) -> None:
    png(tmp_path / "sheets" / "pics" / "a.png")
    write("sheets/rows.csv", "prompt,references,reference_strength\nedit,pics/a.png|tos-cn-i-x/y,0.3\n")
    path = write("m.yaml", "jobs:\n  - {type: image_to_image, rows: sheets/rows.csv}\n")
    (spec,) = specs(path)
    assert [(r.kind, r.strength) for r in spec.references] == [("file", 0.3), ("uri", 0.3)]


def test_escaped_bar_is_a_literal(write: Callable[..., Path]) -> None:
    path = write("s.csv", "prompt\na \\| b|c\n")
    assert [s.prompt for s in specs(path)] == ["a | b", "c"]


def test_rows_are_streamed(write: Callable[..., Path]) -> None:
    """Reading a spreadsheet yields rows one at a time instead of loading the file."""
    path = write("s.csv", "prompt\n" + "".join(f"p{i}\n" for i in range(1000)))
    rows = iter_sheet(path)
    first = next(rows)
    assert (first.number, first.cells) == (2, {"prompt": "p0"})
    with path.open("a") as handle:  # a generator reads lazily: rows appended now are still seen
        handle.write("late\n")
    assert sum(1 for _ in rows) == 1000


def test_csv_with_byte_order_mark(write: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes("\ufeffprompt,model\nhello,jimeng-4.0\n".encode())
    assert summary_of(tmp_path / "bom.csv").distinct == 1


def test_not_utf8_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin.csv").write_bytes("prompt\ncaf\xe9\n".encode("latin-1"))
    from jimeng_batch.errors import ManifestError

    with pytest.raises(ManifestError, match=r"latin.csv:2:4: not UTF-8 text \(invalid continuation byte at byte 10\); "
                                            r"save it as CSV UTF-8"):
        summary_of(tmp_path / "latin.csv")


def test_an_xlsx_is_tallied_as_its_requests_count(tmp_path: Path) -> None:
    # Rows of a seen shape are counted from their cells as read: numbers, blanks and spaces as the XLSX gives them
    rows: list[list[object]] = [["prompt", "model", "seed", "count"]]
    rows += [[f" picture {i % 5} ", "jimeng-4.0" if i % 2 else "jimeng-3.0", 42 if i % 3 else None,
              None if i % 3 else 2] for i in range(60)]  # each row twice: 30 apart
    rows += [[None, "jimeng-4.0", 42, None], ["", "", None, None]]
    manifest = load_manifest(xlsx(tmp_path / "rows.xlsx", rows))
    tallied, built = summarize(manifest), summarize(manifest, lambda spec: None)
    assert tallied.as_dict() == built.as_dict() and tallied.problems == built.problems
    assert [(p.location.row, p.location.column_name) for p in tallied.problems] == [(62, None)]
    assert tallied.distinct == 30 and tallied.requests == 80
