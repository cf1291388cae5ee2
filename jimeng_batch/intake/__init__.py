"""Intake: manifests and spreadsheets read, validated, expanded and planned."""
