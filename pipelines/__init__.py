"""lmpipe pipelines: Ray stages (ingest, tokenize, shard, count, co-occurrence), orchestration and CLI."""

__version__ = "0.1.0"
