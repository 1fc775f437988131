"""SAM 2.1 / SAM2S network: building from a config, checkpoints, export-friendly stages."""
