"""jimeng-batch: declarative, validated, resumable batches of Jimeng / Dreamina AIGC generations."""

__version__ = "0.1.0"
