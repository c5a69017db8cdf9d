"""Benchmarks: scripts that print measured numbers. Run as modules from the repo root,
e.g. `python -m benchmarks.engine`, so `storage` and `probes` resolve to the packages."""
