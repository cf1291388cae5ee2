"""Engine: the ledger, the executor and what runs around it."""
