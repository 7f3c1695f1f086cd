"""Fixtures of the integration tests: ``hub_server``, a loopback Hugging Face Hub.

How the client is pointed at the server, in-process: ``huggingface_hub`` reads its settings
from the environment once, when ``huggingface_hub.constants`` is imported, and keeps them as
module attributes that the rest of the library reads at call time (``constants.ENDPOINT``,
``constants.HF_HUB_CACHE``...). By the time a test runs the module is long imported, so
setting ``HF_ENDPOINT``/``HF_HOME`` alone would change nothing. The fixture therefore does
both: it sets the environment variables (for subprocesses, and for any code that reads them
itself, like diffkit's ``HF_HUB_OFFLINE`` check) and patches the module attributes that were
derived from them: the endpoint and the URL template built from it (``hf_hub_url`` formats
``HUGGINGFACE_CO_URL_TEMPLATE``, it does not re-read ``ENDPOINT``), the cache, token and
agent-registry paths, offline mode, and telemetry (which, when on, fetches an agent registry
from the endpoint once per process and would add a request to the records). It then closes
huggingface_hub's shared HTTP client so that a fresh one is built with ``NO_PROXY`` covering
127.0.0.1. A subprocess per load would avoid the patching but costs seconds of imports per
test; the patched attributes are checked against the server URL before each test runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

#: constants that must exist in huggingface_hub for the redirection to be complete
_REQUIRED = ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")


def point_hub_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """Send every huggingface_hub request of this process to ``endpoint``, with a cache under ``home``."""
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    hub_cache = home / "hub"
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE",
                "HUGGINGFACE_CO_STAGING", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    for key in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(key, "")
        monkeypatch.setenv(key, ",".join(filter(None, [current, "127.0.0.1", "localhost"])))

    patched = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        # present in recent releases only; patched where they exist
        "HF_HOME": str(home),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
    }
    for name, value in patched.items():
        if name in _REQUIRED or hasattr(constants, name):
            monkeypatch.setattr(constants, name, value, raising=True)
    close_session()  # the next request builds a client that sees NO_PROXY

    from huggingface_hub import HfApi, hf_hub_url

    assert hf_hub_url("a/b", "f.json").startswith(endpoint + "/"), "huggingface_hub still uses another endpoint"
    assert HfApi().endpoint == endpoint


@pytest.fixture
def hub_server(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running loopback Hub for one test; huggingface_hub talks to it and caches in a fresh folder.

    The server is stopped (socket closed, threads joined) when the test ends, whatever its outcome.
    """
    from huggingface_hub.utils import close_session

    server = HubServer().start()
    try:
        point_hub_client_at(monkeypatch, server.url, tmp_path_factory.mktemp("hf_home"))
        yield server
    finally:
        close_session()
        server.stop()
