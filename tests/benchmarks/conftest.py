"""Benchmarks are scripts, not tests: only ``test_*.py`` here (the cheap checks of the harness) is collected."""

collect_ignore_glob = ["bench_*.py", "timing.py"]
