"""lmpipe pipelines: the run directory, the spec, the stages, orchestration and the CLI."""
