"""Outputs: results, metrics, reports, dataset export and merging, all read from a ledger."""

# The dataset card's license when `export --license` is not given: the Hub's "none of the listed ones", since the
# service's terms govern the generated files. Here, not in export.py, so the command line can show it without
# importing pandas.
DEFAULT_LICENSE = "other"
