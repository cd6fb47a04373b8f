"""The one file name two layers must both know: ``config.toml`` marks a run folder. kit.runs.folder owns every
file of a run folder; the data stage only needs to recognise one kept inside a download (and skip it as a class)."""

RUN_CONFIG = "config.toml"
