"""Cheap checks of the benchmark harness (``timing.py``); every benchmark script compiles and ends on its ratio."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import timing  # noqa: E402

SCRIPTS = sorted(HERE.glob("bench_*.py"))


def test_interleave_rotates_which_case_goes_first():
    calls: list[str] = []

    def case(name: str):
        return lambda: calls.append(name) or 1.0

    series = timing.interleave({"a": case("a"), "b": case("b"), "c": case("c")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert series["a"]["seconds"].values == [1.0, 1.0, 1.0]
    assert len(series["a"]["seconds"].loads) == 3


def test_figure_reports_median_min_max_and_load():
    f = timing.Figure([3.0, 1.0, 2.0], [0.5, 1.5, 1.0])
    assert (f.median, f.min, f.max) == (2.0, 1.0, 3.0)
    assert f.text(scale=1000, unit="ms", digits=0) == "2000 (1000..3000) ms  [load 0.50-1.50]"
    assert timing.ratio(f, f.scaled(2)) == 0.5


def test_ratio_line_format():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        timing.print_ratio(0.3149, "per step", "other 1.00x")
        timing.print_ratio(None, "skipped")
    assert out.getvalue().splitlines() == [
        "ratio diffkit/diffusers 0.31x per step; other 1.00x",
        "ratio diffkit/diffusers n/a skipped",
    ]


def test_peak_rss_is_measured_from_the_process_own_floor():
    floor = timing.reset_peak_rss()
    block = bytearray(64 * 2**20)
    block[:: 4096] = b"\1" * len(block[:: 4096])  # touch every page
    assert timing.peak_rss_mb() - floor > 48
    del block
    assert timing.reset_peak_rss() == pytest.approx(timing.peak_rss_mb(), abs=8)


def test_children_may_write_bytecode():
    record = timing.run_python(["-c", "import json, os, sys; print(json.dumps({'off': int(sys.dont_write_bytecode), "
                                      "'env': int('PYTHONDONTWRITEBYTECODE' in os.environ)}))"])
    assert record["off"] == 0 and record["env"] == 0 and record["cpu"] >= 0


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_compiles_and_prints_its_ratio_last(script: Path):
    source = script.read_text()
    compile(source, str(script), "exec")
    assert "print_ratio(" in source
    main = source[source.index("def main(") :]
    last_print = re.findall(r"\b(print_ratio|print)\(", main)[-1]
    assert last_print == "print_ratio", f"{script.name}: the last thing main() prints must be the ratio"

