"""Loading pipelines and models from a Hub repo, against the loopback Hub of ``hub_server.py``.

The components are the in-process toys of ``core/tests/toy_components.py`` (the DDPM pipeline
and scheduler plugins are not installed in this workspace). Every test asserts the exact
requests made: the repo info, the tree listing, and a HEAD + GET per file actually used.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from diffkit import CheckpointError, DiffusionPipeline
from diffkit.testing import plugin

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "tests"))
from toy_components import ToyModel, ToyPipeline, ToyScheduler, hook_module  # noqa: E402

REPO = "org/toy"
WEIGHTS = "diffusion_pytorch_model"
PIPELINE_FILES = {"model_index.json", "scheduler/scheduler_config.json", "model/config.json"}


# -- helpers ---------------------------------------------------------------------------------
def toy_model(seed: int, features: int = 4) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel(features=features)


def run(pipe: ToyPipeline) -> torch.Tensor:
    features = pipe.model.config.features
    return pipe(torch.linspace(-1, 1, 2 * features).reshape(2, features))


def same_outputs(a: ToyPipeline, b: ToyPipeline) -> bool:
    return torch.equal(run(a), run(b))


def file_calls(repo: str, revision: str, *paths: str) -> list[tuple[str, str]]:
    """A HEAD (metadata) and a GET (content) per file, as hf_hub_download does on a cold cache."""
    return [(m, f"/{repo}/resolve/{revision}/{p}") for p in paths for m in ("HEAD", "GET")]


def api_calls(repo: str, sha: str, revision: str | None = None) -> list[tuple[str, str]]:
    info = f"/api/models/{repo}" + (f"/revision/{revision}" if revision else "")
    return [("GET", info), ("GET", f"/api/models/{repo}/tree/{sha}")]


def assert_calls(hub, expected: list[tuple[str, str]]) -> None:
    assert Counter(hub.calls()) == Counter(expected), f"requests: {hub.calls()}"


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def toys(diffkit_registry):
    with plugin(hook_module(), dist="diffkit-toys"):
        yield


@pytest.fixture
def source(toys, tmp_path) -> Path:
    """A pipeline folder as it would be pushed to the Hub: three weight files and unrelated folders.

    The fp16 and .bin weights come from other seeds than the fp32 ones, so loading the wrong
    file gives other numbers.
    """
    folder = tmp_path / "source"
    ToyPipeline(model=toy_model(0), scheduler=ToyScheduler(num_train_timesteps=7), strength=0.5).save_pretrained(folder)
    toy_model(1).half().save_pretrained(tmp_path / "half", variant="fp16")
    shutil.copy(tmp_path / "half" / f"{WEIGHTS}.fp16.safetensors", folder / "model")
    toy_model(2).save_pretrained(tmp_path / "pickled", safe_serialization=False)
    shutil.copy(tmp_path / "pickled" / f"{WEIGHTS}.bin", folder / "model")
    # Folders that model_index.json does not name (or names for nothing) must never be fetched.
    (folder / "unused_vae").mkdir()
    (folder / "unused_vae" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    (folder / "unused_vae" / f"{WEIGHTS}.safetensors").write_bytes(b"\0" * (1 << 20))
    (folder / "text_encoder").mkdir()
    (folder / "text_encoder" / "config.json").write_text("{}")
    (folder / "text_encoder" / "model.safetensors").write_bytes(b"\1" * (1 << 18))
    (folder / "README.md").write_text("# toy\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    return folder


@pytest.fixture
def repo(hub_server, source) -> str:
    """``REPO`` on the loopback Hub, main branch; returns its commit sha."""
    return hub_server.add_commit(REPO, source)


# -- the server itself -----------------------------------------------------------------------
def test_server_answers_huggingface_hub_like_the_hub(hub_server, tmp_path):
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile, RepoFolder
    from huggingface_hub.utils import get_session

    files = {"a.json": b"{}", "sub/w.safetensors": bytes(range(256)) * 4, "sub/deep/c.txt": b"hi"}
    sha = hub_server.add_commit("org/r", files)
    assert len(sha) == 40 and sha == hub_server.add_commit("org/r", files)  # fixed for given content
    api = HfApi()

    info = api.model_info("org/r", files_metadata=True)
    assert info.sha == sha and info.id == "org/r"
    assert {s.rfilename: s.size for s in info.siblings} == {k: len(v) for k, v in files.items()}
    assert next(s for s in info.siblings if s.rfilename == "sub/w.safetensors").lfs.size == 1024

    listing = list(api.list_repo_tree("org/r", recursive=True))
    assert {e.path for e in listing if isinstance(e, RepoFile)} == set(files)
    assert {e.path for e in listing if isinstance(e, RepoFolder)} == {"sub", "sub/deep"}
    hub_server.page_size = 2  # three pages, followed through the Link header
    hub_server.clear()
    paged = list(api.list_repo_tree("org/r", recursive=True))
    assert [e.path for e in paged] == [e.path for e in listing]
    assert hub_server.calls() == [("GET", "/api/models/org/r/tree/main")] * 3
    hub_server.page_size = None
    assert {e.path for e in api.list_repo_tree("org/r", "sub")} == {"sub/deep", "sub/w.safetensors"}

    path = hf_hub_download("org/r", "sub/w.safetensors")
    assert Path(path).read_bytes() == files["sub/w.safetensors"]
    assert Path(path).parent.parent.name == sha
    meta = get_hf_file_metadata(hf_hub_url("org/r", "a.json"))
    assert (meta.commit_hash, meta.size) == (sha, 2)
    lfs = get_hf_file_metadata(hf_hub_url("org/r", "sub/w.safetensors", revision=sha))
    assert lfs.etag == next(e for e in listing if e.path == "sub/w.safetensors").lfs.sha256  # LFS: sha256 etag
    partial = get_session().get(hf_hub_url("org/r", "sub/w.safetensors"), headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206 and partial.content == files["sub/w.safetensors"][10:20]
    assert partial.headers["Content-Range"] == "bytes 10-19/1024"

    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "a.json")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/r", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/r", "a.json", revision="nope")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/r", "b.json")
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree("org/r", "nowhere"))


def test_server_stops_and_releases_its_port_and_threads():
    import http.client
    import socket
    import threading

    from hub_server import HubServer

    before = set(threading.enumerate())
    with HubServer() as server:
        server.add_commit("org/r", {"a.json": b"{}"})
        port = int(server.url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/org/r/resolve/main/a.json")
        assert connection.getresponse().read() == b"{}"
        connection.close()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert server.running
    assert not server.running
    assert set(threading.enumerate()) <= before  # the serving thread and every request thread are gone
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- pipelines: what is fetched --------------------------------------------------------------
def test_from_pretrained_fetches_only_the_files_it_loads(hub_server, repo, source):
    pipe = DiffusionPipeline.from_pretrained(REPO)

    assert type(pipe) is ToyPipeline and pipe.settings == {"strength": 0.5}
    assert same_outputs(pipe, DiffusionPipeline.from_pretrained(source))
    assert hub_server.downloaded() == PIPELINE_FILES | {f"model/{WEIGHTS}.safetensors"}
    assert_calls(hub_server, [
        *api_calls(REPO, repo),
        *file_calls(REPO, "main", "model_index.json"),
        *file_calls(REPO, repo, "model/config.json", f"model/{WEIGHTS}.safetensors",
                    "scheduler/scheduler_config.json"),
    ])


@pytest.mark.parametrize(
    "options, weights",
    [
        ({"variant": "fp16"}, f"{WEIGHTS}.fp16.safetensors"),
        ({"use_safetensors": False, "allow_pickle": True}, f"{WEIGHTS}.bin"),
    ],
    ids=["fp16", "pickle"],
)
def test_variant_and_pickle_fetch_only_their_weights(hub_server, repo, source, options, weights):
    pipe = DiffusionPipeline.from_pretrained(REPO, **options)

    assert hub_server.downloaded() == PIPELINE_FILES | {f"model/{weights}"}
    assert len(hub_server.calls()) == 2 + 2 * 4
    assert same_outputs(pipe, DiffusionPipeline.from_pretrained(source, **options))
    assert not same_outputs(pipe, DiffusionPipeline.from_pretrained(source))  # not the fp32 weights


def test_download_returns_the_snapshot_folder_with_exactly_those_files(hub_server, repo):
    folder = DiffusionPipeline.download(REPO)

    assert folder == hub_cache() / "models--org--toy" / "snapshots" / repo
    assert files_under(folder) == PIPELINE_FILES | {f"model/{WEIGHTS}.safetensors"}
    assert DiffusionPipeline.download(REPO, variant="fp16") == folder
    assert files_under(folder) == PIPELINE_FILES | {f"model/{WEIGHTS}.safetensors", f"model/{WEIGHTS}.fp16.safetensors"}


def test_a_passed_component_is_not_downloaded(hub_server, repo):
    scheduler = ToyScheduler(num_train_timesteps=3)
    pipe = DiffusionPipeline.from_pretrained(REPO, scheduler=scheduler)

    assert pipe.scheduler is scheduler
    assert hub_server.downloaded() == {"model_index.json", "model/config.json", f"model/{WEIGHTS}.safetensors"}


# -- pipelines: cache and offline ------------------------------------------------------------
def test_cached_files_are_not_fetched_again_and_offline_loading_makes_no_request(
    hub_server, repo, source, monkeypatch, caplog
):
    from huggingface_hub import constants

    reference = DiffusionPipeline.from_pretrained(source)
    DiffusionPipeline.from_pretrained(REPO)
    hub_server.clear()

    # Online again: listing, and only a HEAD for model_index.json (asked for by branch); files by sha are cached.
    assert same_outputs(DiffusionPipeline.from_pretrained(REPO), reference)
    assert_calls(hub_server, [*api_calls(REPO, repo), ("HEAD", "/org/toy/resolve/main/model_index.json")])
    hub_server.clear()

    assert same_outputs(DiffusionPipeline.from_pretrained(REPO, local_files_only=True), reference)
    assert hub_server.calls() == []

    with monkeypatch.context() as offline:
        offline.setenv("HF_HUB_OFFLINE", "1")
        offline.setattr(constants, "HF_HUB_OFFLINE", True)  # as when set before huggingface_hub is imported
        assert same_outputs(DiffusionPipeline.from_pretrained(REPO), reference)
        assert DiffusionPipeline.download(REPO) == hub_cache() / "models--org--toy" / "snapshots" / repo
    assert hub_server.calls() == []

    hub_server.stop()
    with caplog.at_level(logging.WARNING, logger="diffkit.pipeline"):
        assert same_outputs(DiffusionPipeline.from_pretrained(REPO), reference)
    assert "cannot reach the Hub" in caplog.text
    model = ToyModel.from_pretrained(REPO, subfolder="model")  # snapshot_download falls back to the cache too
    assert torch.equal(model.proj.weight, reference.model.proj.weight)
    assert hub_server.calls() == []


@pytest.mark.parametrize(
    "value, offline", [("1", True), ("TRUE", True), ("yes", True), ("On", True), ("", False), ("0", False),
                       ("false", False), ("False", False), ("no", False)],
)
def test_hf_hub_offline_is_read_as_huggingface_hub_reads_it(monkeypatch, value, offline):
    from diffkit.hub import hub_kwargs

    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_kwargs()["local_files_only"] is offline
    assert hub_kwargs(local_files_only=False)["local_files_only"] is False


def test_offline_loading_after_a_model_download_of_the_same_commit(hub_server, repo, source):
    # Model.from_pretrained goes through snapshot_download, which caches the commit's full tree
    # listing; offline, huggingface_hub then checks that every file asked for is in the snapshot.
    ToyModel.from_pretrained(REPO, subfolder="model")
    DiffusionPipeline.from_pretrained(REPO)
    hub_server.clear()

    pipe = DiffusionPipeline.from_pretrained(REPO, local_files_only=True)
    assert same_outputs(pipe, DiffusionPipeline.from_pretrained(source))
    assert hub_server.calls() == []


def test_offline_without_a_cached_snapshot_names_the_repo(hub_server, repo):
    with pytest.raises(CheckpointError, match="'org/toy' is not in the local Hub cache"):
        DiffusionPipeline.from_pretrained(REPO, local_files_only=True)
    hub_server.stop()
    with pytest.raises(CheckpointError, match=r"cannot reach the Hub \(.*\) and 'org/toy' is not in the local Hub cache"):
        DiffusionPipeline.from_pretrained(REPO)


def test_offline_variant_missing_from_the_snapshot(hub_server, repo):
    DiffusionPipeline.from_pretrained(REPO)
    with pytest.raises(CheckpointError, match="variant 'fp16' was requested but no component folder"):
        DiffusionPipeline.from_pretrained(REPO, variant="fp16", local_files_only=True)


# -- revisions and errors --------------------------------------------------------------------
def test_branch_and_commit_revisions(hub_server, repo, source, tmp_path):
    other = tmp_path / "other"
    ToyPipeline(model=toy_model(5), scheduler=ToyScheduler(num_train_timesteps=4), strength=2.0).save_pretrained(other)
    v2 = hub_server.add_commit(REPO, other, branch="v2")
    assert v2 != repo

    by_branch = DiffusionPipeline.from_pretrained(REPO, revision="v2")
    assert same_outputs(by_branch, DiffusionPipeline.from_pretrained(other))
    assert by_branch.settings == {"strength": 2.0}
    assert_calls(hub_server, [
        *api_calls(REPO, v2, revision="v2"),
        *file_calls(REPO, "v2", "model_index.json"),
        *file_calls(REPO, v2, "model/config.json", f"model/{WEIGHTS}.safetensors", "scheduler/scheduler_config.json"),
    ])
    hub_server.clear()

    by_sha = DiffusionPipeline.from_pretrained(REPO, revision=repo)
    assert same_outputs(by_sha, DiffusionPipeline.from_pretrained(source))
    assert ("GET", f"/api/models/{REPO}/revision/{repo}") in hub_server.calls()
    assert all(f"/resolve/{repo}/" in path for method, path in hub_server.calls() if "/resolve/" in path)
    hub_server.clear()

    # The branch -> commit mapping was cached: offline loading by branch name finds the v2 snapshot.
    offline = DiffusionPipeline.from_pretrained(REPO, revision="v2", local_files_only=True)
    assert same_outputs(offline, by_branch)
    assert same_outputs(DiffusionPipeline.from_pretrained(REPO, revision=repo, local_files_only=True), by_sha)
    assert hub_server.calls() == []


@pytest.mark.parametrize(
    "repo_id, options, message",
    [
        ("org/missing", {}, r"^'org/missing' is not a Hub repo \(or it is private or gated: pass token=\.\.\.\)$"),
        (REPO, {"revision": "nope"}, r"^Hub repo 'org/toy' has no revision 'nope' \(no such branch, tag or commit\)$"),
    ],
    ids=["repo", "revision"],
)
def test_unknown_repo_or_revision_is_one_clear_error(hub_server, repo, repo_id, options, message):
    for load in (
        lambda: DiffusionPipeline.from_pretrained(repo_id, **options),
        lambda: DiffusionPipeline.download(repo_id, **options),
        lambda: ToyModel.from_pretrained(repo_id, subfolder="model", **options),
    ):
        with pytest.raises(CheckpointError, match=message) as caught:
            load()
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert hub_server.downloaded() == set()


def test_a_repo_without_model_index_is_not_a_pipeline(hub_server, toys):
    hub_server.add_commit("org/model-only", {"config.json": b"{}"})
    with pytest.raises(CheckpointError, match="Hub repo 'org/model-only' has no model_index.json"):
        DiffusionPipeline.from_pretrained("org/model-only")
    assert hub_server.downloaded() == set()


# -- single models ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, weights",
    [({}, f"{WEIGHTS}.safetensors"), ({"variant": "fp16"}, f"{WEIGHTS}.fp16.safetensors")],
    ids=["fp32", "fp16"],
)
def test_model_from_a_repo_subfolder_fetches_only_its_config_and_weights(hub_server, repo, source, options, weights):
    model = ToyModel.from_pretrained(REPO, subfolder="model", **options)

    expected = ToyModel.from_pretrained(source, subfolder="model", **options)
    for key, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    assert hub_server.downloaded() == {"model/config.json", f"model/{weights}"}
    assert_calls(hub_server, [
        *api_calls(REPO, repo, revision="main"),  # snapshot_download always names the revision
        *file_calls(REPO, repo, "model/config.json", f"model/{weights}"),
    ])


# -- sharded weights -------------------------------------------------------------------------
@pytest.fixture
def sharded(hub_server, toys, tmp_path) -> tuple[str, Path]:
    """``org/sharded``: the model's fp32 weights in shards, its fp16 weights in shards too."""
    folder = tmp_path / "sharded"
    ToyPipeline(model=toy_model(3, features=16), scheduler=ToyScheduler()).save_pretrained(folder, max_shard_size=600)
    toy_model(4, features=16).half().save_pretrained(tmp_path / "half", variant="fp16", max_shard_size=300)
    for path in (tmp_path / "half").glob(f"{WEIGHTS}*"):
        shutil.copy(path, folder / "model")
    return hub_server.add_commit("org/sharded", folder), folder


def shard_files(folder: Path, variant: str | None) -> set[str]:
    names = {p.name for p in (folder / "model").glob(f"{WEIGHTS}*")}
    mine = {n for n in names if (".fp16." in n) == (variant == "fp16")}
    assert len(mine) >= 3 and any(n.endswith(".json") for n in mine)  # an index and at least two shards
    return {f"model/{n}" for n in mine}


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_sharded_model_fetches_the_index_and_all_its_shards(hub_server, sharded, variant):
    sha, folder = sharded
    model = ToyModel.from_pretrained("org/sharded", subfolder="model", variant=variant)

    expected = ToyModel.from_pretrained(folder, subfolder="model", variant=variant)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.state_dict().items())
    assert hub_server.downloaded() == {"model/config.json"} | shard_files(folder, variant)


def test_sharded_pipeline_variant_fetches_the_index_and_all_its_shards(hub_server, sharded):
    sha, folder = sharded
    pipe = DiffusionPipeline.from_pretrained("org/sharded", variant="fp16")

    assert same_outputs(pipe, DiffusionPipeline.from_pretrained(folder, variant="fp16"))
    assert hub_server.downloaded() == PIPELINE_FILES | shard_files(folder, "fp16")


def test_sharded_pipeline_fetches_the_index_and_all_its_shards(hub_server, sharded):
    sha, folder = sharded
    pipe = DiffusionPipeline.from_pretrained("org/sharded")

    assert same_outputs(pipe, DiffusionPipeline.from_pretrained(folder))
    assert hub_server.downloaded() == PIPELINE_FILES | shard_files(folder, None)
