"""The bounds on reading a manifest: how much any input may ask of `validate` and `plan`.

A manifest comes from a spreadsheet or a stranger: a few lists of 50 would expand to hundreds of millions of
requests. ``MAX_REQUESTS_PER_JOB`` is the most requests one job (or one spreadsheet row) may expand to, its
matrix's list lengths multiplied by ``count``, checked before expanding; the command line's ``--max-requests``
changes it. The bounds on the YAML itself (values once aliases are expanded, nesting) are those of every YAML file
the tool reads, in :mod:`jimeng_batch.yaml_bounds`.
"""

from __future__ import annotations

MAX_REQUESTS_PER_JOB = 1_000_000

# An XLSX workbook is a zip of XML parts. openpyxl streams the sheet but holds some parts whole (the shared strings,
# every distinct cell text of the workbook), and a zip can declare a part of gigabytes in a file of kilobytes. So
# each part's declared size is checked before anything is unpacked: zipfile unpacks no further than a part's
# declared size (past it, the part fails its CRC). A sheet of a million rows of 100-character prompts unpacks to
# parts of some 150 MB (sheet) and 120 MB (shared strings).
MAX_XLSX_PART_BYTES = 512 << 20

# The zip's central directory (one record per part) is read whole, into an object per part, before any part is
# looked at: a file of 100 MB can list a million empty parts (some 400 MB of objects). Its declared part count and
# size are checked first, from the record at the end of the file. A workbook has tens of parts; a few thousand
# would be a workbook of hundreds of sheets.
MAX_XLSX_PARTS = 10_000
MAX_XLSX_DIRECTORY_BYTES = 4 << 20
