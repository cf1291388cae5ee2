"""Outputs: results, metrics, reports, dataset export and merging, all read from a ledger."""
