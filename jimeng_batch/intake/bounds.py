"""The bounds on reading a manifest: how much any input may ask of `validate` and `plan`. One place, one value.

A manifest comes from a spreadsheet or a stranger: a 451-byte YAML of nested aliases would expand to billions of
values, a few lists of 50 to hundreds of millions of requests. Each bound below turns such an input into one
located problem, found before the work (or the memory) it would take, never a hang or a crash:

- ``MAX_YAML_VALUES``: the values a YAML file may hold once its aliases (``*name``) and merges (``<<``) are
  expanded; a hand-written manifest holds hundreds, and large batches belong in a spreadsheet (``rows:``), which
  is streamed and not bound by this.
- ``MAX_YAML_DEPTH``: mappings and lists inside each other (a manifest needs five levels); a recursive alias is
  an infinitely deep document and ends here too.
- ``MAX_REQUESTS_PER_JOB``: the requests one job (or one spreadsheet row) may expand to, its matrix's list
  lengths multiplied by ``count``; checked before expanding. The command line's ``--max-requests`` changes it.
"""

from __future__ import annotations

MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 64
MAX_REQUESTS_PER_JOB = 1_000_000
