"""The CLI with the Hub out of reach: one message, at once, saying how to get the checkpoint.

``HF_ENDPOINT`` points at a loopback port that refuses connections, so the tests never touch the
network and fail as fast as a machine without one; huggingface_hub's downloads alone would retry
for about 25 s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HOW_TO_GET_IT = ("HF_HUB_OFFLINE=1", "--local-files-only", "path of a folder")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but never listens: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _cli(args: list[str], tmp_path: Path, port: int, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    environ.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"), **env)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "diffkit.cli", *args], capture_output=True, text=True, timeout=120, env=environ
    )
    return proc, time.perf_counter() - started


def _one_error_line(proc: subprocess.CompletedProcess[str], prog: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no retry chatter, no second contradictory message
    assert lines[0].startswith(f"diffkit {prog}: error:"), lines[0]
    return lines[0]


def test_info_of_an_unreachable_uncached_repo_answers_at_once(tmp_path, closed_port):
    startup = _cli(["--version"], tmp_path, closed_port)[1]
    proc, seconds = _cli(["info", "some-org/some-model"], tmp_path, closed_port)
    line = _one_error_line(proc, "info")
    assert "cannot reach the Hub" in line and "not in the local Hub cache" in line, line
    assert str(tmp_path / "hf" / "hub") in line  # which cache was looked at
    for hint in HOW_TO_GET_IT:
        assert hint in line, line
    # 2 s on an idle machine; a loaded CI machine gets slack, the retries it replaces took ~25 s
    assert seconds - startup < 6.0, f"{seconds:.1f} s (startup {startup:.1f} s)"


def test_info_offline_says_downloading_is_off(tmp_path, closed_port):
    for args, env in ((["--local-files-only"], {}), ([], {"HF_HUB_OFFLINE": "1"})):
        proc, _ = _cli(["info", "some-org/some-model", *args], tmp_path, closed_port, **env)
        line = _one_error_line(proc, "info")
        assert "downloading is switched off" in line and "cannot reach" not in line, line
        assert "path of a folder" in line


def test_generate_of_an_unreachable_uncached_repo_gives_one_message(tmp_path, closed_port):
    proc, _ = _cli(["generate", "some-org/some-model", "--output", str(tmp_path / "x.png")], tmp_path, closed_port)
    line = _one_error_line(proc, "generate")
    assert "using the cached snapshot" not in proc.stderr  # it was said before, then contradicted
    assert "cannot reach the Hub" in line and "not in the local Hub cache" in line, line
    for hint in HOW_TO_GET_IT:
        assert hint in line, line
    proc, _ = _cli(["generate", "some-org/some-model", "--local-files-only"], tmp_path, closed_port)
    assert "downloading is switched off" in _one_error_line(proc, "generate")
