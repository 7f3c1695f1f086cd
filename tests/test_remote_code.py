"""The remote-code gate: every source of code that no installed package provides, and its rules.

Sources: ``custom_pipeline`` as a local ``.py`` file, a local folder with ``pipeline.py``, or a
Hub repo; ``_class_name: [module, Class]`` in a local or Hub checkpoint; a component whose
library is a ``.py`` file of a local or Hub checkpoint. For each: without ``trust_remote_code``
the code is refused and never runs (each file creates a sentinel file when it is executed),
with it the pipeline loads and runs, and ``DIFFKIT_DISABLE_REMOTE_CODE=1`` refuses even when
trusted. A local file named in ``custom_pipeline`` is no exception: it needs ``trust_remote_code``
too, as in diffusers. Hub cases run against the
loopback Hub of ``hub_server.py`` and assert that refused code is never even downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from diffkit import CheckpointError, ComponentNotFoundError, DiffusionPipeline, RemoteCodeError
from diffkit.remote_code import CodeSource, check_remote_code, pick_class, remote_code_disabled, run_remote_module
from diffkit.testing import plugin

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "tests"))
from toy_components import ToyModel, ToyPipeline, ToyScheduler, hook_module  # noqa: E402

DISABLE = "DIFFKIT_DISABLE_REMOTE_CODE"
X = torch.linspace(-1, 1, 8).reshape(2, 4)


# -- code files ------------------------------------------------------------------------------
def mark(sentinel: Path) -> str:
    """Code that appends a line to ``sentinel`` when the file is executed."""
    return f"import pathlib\nwith pathlib.Path({str(sentinel)!r}).open('a') as _fh:\n    _fh.write('ran\\n')\n"


def pipeline_code(sentinel: Path, name: str = "RemoteToyPipeline", gain: float = 3.0) -> str:
    return mark(sentinel) + textwrap.dedent(f"""
        from diffkit import Pipeline

        class {name}(Pipeline):
            def __init__(self, model, scheduler, gain: float = {gain}):
                super().__init__(model=model, scheduler=scheduler, gain=gain)

            def __call__(self, x):
                return self.model(x) * self.settings["gain"]
    """)


def scheduler_code(sentinel: Path) -> str:
    return mark(sentinel) + textwrap.dedent("""
        import torch
        from diffkit.config import Config
        from diffkit.scheduler import Scheduler, SchedulerState

        class HalvingConfig(Config):
            owner_name = "HalvingScheduler"
            num_train_timesteps: int = 10

        class HalvingState(SchedulerState):
            def step(self, model_output, timestep, sample, generator=None, return_dict=True, **kwargs):
                return (sample * 0.5,)

        class HalvingScheduler(Scheduler):
            config_class = HalvingConfig

            def plan(self, num_inference_steps=None, device=None, **kwargs):
                n = num_inference_steps or self.config.num_train_timesteps
                return HalvingState(self, torch.arange(n - 1, -1, -1, device=device), n)
    """)


def ran(sentinel: Path) -> int:
    """How many times the code that marks ``sentinel`` was executed."""
    return len(sentinel.read_text().splitlines()) if sentinel.exists() else 0


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def toys(diffkit_registry):
    with plugin(hook_module(), dist="diffkit-toys"):
        yield


@pytest.fixture(autouse=True)
def remote_code_allowed(monkeypatch):
    monkeypatch.delenv(DISABLE, raising=False)


@pytest.fixture
def checkpoint(toys, tmp_path) -> Path:
    """A toy pipeline checkpoint that needs no code: ToyModel + ToyScheduler, ToyPipeline."""
    torch.manual_seed(0)
    folder = tmp_path / "checkpoint"
    ToyPipeline(model=ToyModel(features=4), scheduler=ToyScheduler(num_train_timesteps=7)).save_pretrained(folder)
    return folder


def edit_index(folder: Path, **changes: Any) -> None:
    path = folder / "model_index.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def with_class_code(folder: Path, sentinel: Path) -> Path:
    """``folder`` made into a checkpoint whose ``_class_name`` points at its own ``remote_pipe.py``."""
    (folder / "remote_pipe.py").write_text(pipeline_code(sentinel))
    edit_index(folder, _class_name=["remote_pipe", "RemoteToyPipeline"])
    return folder


def with_component_code(folder: Path, sentinel: Path) -> Path:
    """``folder`` made into a checkpoint whose scheduler is the class in ``scheduler/halving.py``."""
    (folder / "scheduler" / "halving.py").write_text(scheduler_code(sentinel))
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "HalvingScheduler"}))
    edit_index(folder, scheduler=["halving", "HalvingScheduler"])
    return folder


# -- the source matrix -----------------------------------------------------------------------
@dataclass
class Case:
    """One source of code: how to load it, and what the loaded pipeline must compute."""

    load: Any  # (**options) -> pipeline
    sentinel: Path
    code_file: str  # how the refusal names the file
    expect: str = "gain"  # "gain": RemoteToyPipeline (model(x) * 3); "halving": ToyPipeline with HalvingScheduler
    hub_file: str | None = None  # the file's path in its Hub repo: refused code is never downloaded


def build_case(kind: str, checkpoint: Path, tmp_path: Path, hub_server: Any) -> Case:
    sentinel = tmp_path / f"{kind}.ran"
    if kind == "custom-local-file":
        file = tmp_path / "my_pipeline.py"
        file.write_text(pipeline_code(sentinel))
        return Case(lambda **o: DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline=str(file), **o),
                    sentinel, str(file))
    if kind == "custom-local-folder":
        folder = tmp_path / "my_pipeline"
        folder.mkdir()
        (folder / "pipeline.py").write_text(pipeline_code(sentinel))
        return Case(lambda **o: DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline=folder, **o),
                    sentinel, str(folder / "pipeline.py"))
    if kind == "custom-hub-repo":
        sha = hub_server.add_commit("org/pipe-code", {"pipeline.py": pipeline_code(sentinel).encode()})
        return Case(lambda **o: DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline="org/pipe-code",
                                                                  custom_revision=sha, **o),
                    sentinel, f"pipeline.py of Hub repo 'org/pipe-code' (revision '{sha}')", hub_file="pipeline.py")
    if kind == "class-name-local":
        folder = with_class_code(checkpoint, sentinel)
        return Case(lambda **o: DiffusionPipeline.from_pretrained(folder, **o), sentinel, str(folder / "remote_pipe.py"))
    if kind == "class-name-hub":
        hub_server.add_commit("org/with-code", with_class_code(checkpoint, sentinel))
        return Case(lambda **o: DiffusionPipeline.from_pretrained("org/with-code", **o), sentinel,
                    "remote_pipe.py of Hub repo 'org/with-code' (revision 'main', commit ", hub_file="remote_pipe.py")
    if kind == "component-local":
        folder = with_component_code(checkpoint, sentinel)
        return Case(lambda **o: DiffusionPipeline.from_pretrained(folder, **o), sentinel,
                    str(folder / "scheduler" / "halving.py"), expect="halving")
    if kind == "component-hub":
        hub_server.add_commit("org/with-component", with_component_code(checkpoint, sentinel))
        return Case(lambda **o: DiffusionPipeline.from_pretrained("org/with-component", **o), sentinel,
                    "scheduler/halving.py of Hub repo 'org/with-component' (revision 'main', commit ",
                    expect="halving", hub_file="scheduler/halving.py")
    raise AssertionError(kind)


SOURCES = ["custom-local-file", "custom-local-folder", "custom-hub-repo", "class-name-local", "class-name-hub",
           "component-local", "component-hub"]
#: the sources that need trust_remote_code: all of them
GATED = SOURCES


@pytest.fixture
def case(request, checkpoint, tmp_path, hub_server) -> Case:
    return build_case(request.param, checkpoint, tmp_path, hub_server)


def assert_not_fetched(case: Case, hub_server: Any) -> None:
    if case.hub_file is not None:
        assert case.hub_file not in hub_server.downloaded(), "refused code must not even be downloaded"


@pytest.mark.parametrize("case", GATED, indirect=True)
def test_refused_without_trust_remote_code(case, hub_server):
    with pytest.raises(RemoteCodeError) as caught:
        case.load()
    message = str(caught.value)
    assert f"refusing to run {case.code_file}" in message  # the file, and its repo and revision
    assert "trust_remote_code=True" in message  # how to allow it
    assert not case.sentinel.exists()  # the code never ran
    assert_not_fetched(case, hub_server)


@pytest.mark.parametrize("case", SOURCES, indirect=True)
def test_runs_with_trust(case):
    """Every source with trust_remote_code=True."""
    options = {"trust_remote_code": True}
    pipe = case.load(**options)
    assert ran(case.sentinel) == 1
    if case.expect == "gain":
        assert type(pipe).__name__ == "RemoteToyPipeline" and pipe.settings == {"gain": 3.0}
        assert torch.equal(pipe(X), pipe.model(X) * 3.0)
    else:
        assert type(pipe) is ToyPipeline and type(pipe.scheduler).__name__ == "HalvingScheduler"
        assert torch.equal(pipe(X), X * 0.125)  # three halving steps, strength 1
    assert isinstance(pipe.model, ToyModel)  # the other components load through the normal flow
    case.load(**options)  # the same bytes are not executed twice in one process
    assert ran(case.sentinel) == 1


@pytest.mark.parametrize("case", SOURCES, indirect=True)
def test_refused_when_disabled_even_if_trusted(case, monkeypatch, hub_server):
    monkeypatch.setenv(DISABLE, "1")
    with pytest.raises(RemoteCodeError, match=f"refusing to run .*{DISABLE}='1' forbids") as caught:
        case.load(trust_remote_code=True)
    assert case.code_file in str(caught.value)
    assert not case.sentinel.exists()
    assert_not_fetched(case, hub_server)


@pytest.mark.parametrize("case", SOURCES, indirect=True)
def test_saved_pipeline_keeps_its_code_and_its_gate(case, tmp_path):
    """save_pretrained writes the code file and names it, so the copy loads again, behind the same gate."""
    pipe = case.load(trust_remote_code=True)
    saved = pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((saved / "model_index.json").read_text())
    if case.expect == "gain":
        module = index["_class_name"][0]
        assert index["_class_name"] == [module, "RemoteToyPipeline"]
        source = Path(sys.modules[type(pipe).__module__].__file__)
        assert (saved / f"{module}.py").read_bytes() == source.read_bytes()
    else:
        assert index["scheduler"] == ["halving", "HalvingScheduler"]
        assert (saved / "scheduler" / "halving.py").is_file()
    with pytest.raises(RemoteCodeError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(saved)
    again = DiffusionPipeline.from_pretrained(saved, trust_remote_code=True)
    assert type(again) is type(pipe) and type(again.scheduler) is type(pipe.scheduler)
    assert torch.equal(again(X), pipe(X))


# -- the CVE shape: checkpoint A, custom_pipeline in repo B ----------------------------------
def test_gate_judges_the_custom_pipeline_repo_not_the_checkpoint_repo(checkpoint, tmp_path, hub_server, caplog):
    """diffusers once checked repo A's files while custom_pipeline ran repo B's code."""
    sentinel_a, sentinel_b = tmp_path / "a.ran", tmp_path / "b.ran"
    clean = hub_server.add_commit("org/a-clean", checkpoint)  # no code at all
    with_class_code(checkpoint, sentinel_a)  # A's own code, which must never run here
    hub_server.add_commit("org/a-with-code", checkpoint)
    code_b = pipeline_code(sentinel_b, name="RepoBPipeline", gain=5.0).encode()
    sha_b = hub_server.add_commit("org/b", {"pipeline.py": code_b})

    for repo, revision in (("org/a-clean", clean), ("org/a-with-code", None)):
        with pytest.raises(RemoteCodeError, match=r"refusing to run pipeline.py of Hub repo 'org/b'") as caught:
            DiffusionPipeline.from_pretrained(repo, revision=revision, custom_pipeline="org/b")
        assert "org/a" not in str(caught.value)
    assert ran(sentinel_a) == ran(sentinel_b) == 0
    assert "pipeline.py" not in hub_server.downloaded() and "remote_pipe.py" not in hub_server.downloaded()

    caplog.set_level(logging.INFO, logger="diffkit.remote_code")
    pipe = DiffusionPipeline.from_pretrained("org/a-with-code", custom_pipeline="org/b", custom_revision=sha_b,
                                             trust_remote_code=True)
    assert type(pipe).__name__ == "RepoBPipeline" and torch.equal(pipe(X), pipe.model(X) * 5.0)
    assert ran(sentinel_b) == 1 and ran(sentinel_a) == 0  # B ran; A's code was neither run nor fetched
    assert "remote_pipe.py" not in hub_server.downloaded()
    logged = [r.getMessage() for r in caplog.records if r.name == "diffkit.remote_code"]
    assert any("org/b" in m and hashlib.sha256(code_b).hexdigest() in m for m in logged)
    assert not any("org/a" in m for m in logged)


# -- warnings and logs -----------------------------------------------------------------------
def test_unpinned_hub_code_warns_and_the_sha256_is_logged(checkpoint, tmp_path, hub_server, caplog):
    sentinel = tmp_path / "s.ran"
    code = pipeline_code(sentinel).encode()
    sha = hub_server.add_commit("org/code", {"pipeline.py": code})
    caplog.set_level(logging.INFO, logger="diffkit.remote_code")
    DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline="org/code", trust_remote_code=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "may change" in r.getMessage()]
    assert len(warnings) == 1
    assert "not pinned to a commit" in warnings[0].getMessage() and sha in warnings[0].getMessage()
    ran_logs = [r for r in caplog.records if "running remote code" in r.getMessage()]
    assert ran_logs and hashlib.sha256(code).hexdigest() in ran_logs[-1].getMessage()
    assert ran_logs[-1].levelno == logging.WARNING  # code the caller did not write: visible by default

    caplog.clear()
    DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline="org/code", custom_revision=sha,
                                      trust_remote_code=True)
    assert not [r for r in caplog.records if "may change" in r.getMessage()]  # pinned to a commit: no warning
    assert [r for r in caplog.records if hashlib.sha256(code).hexdigest() in r.getMessage()]


def test_checkpoint_code_pinned_by_revision_does_not_warn(checkpoint, tmp_path, hub_server, caplog):
    sha = hub_server.add_commit("org/pinned", with_class_code(checkpoint, tmp_path / "p.ran"))
    caplog.set_level(logging.INFO, logger="diffkit.remote_code")
    DiffusionPipeline.from_pretrained("org/pinned", revision=sha, trust_remote_code=True)
    assert not [r for r in caplog.records if "may change" in r.getMessage()]
    DiffusionPipeline.from_pretrained("org/pinned", revision="main", trust_remote_code=True)
    assert [r for r in caplog.records if "may change" in r.getMessage() and "org/pinned" in r.getMessage()]


def test_trusted_local_file_is_logged_with_its_sha256(checkpoint, tmp_path, caplog):
    file = tmp_path / "mine.py"
    file.write_text(pipeline_code(tmp_path / "m.ran"))
    caplog.set_level(logging.INFO, logger="diffkit.remote_code")
    DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline=file, trust_remote_code=True)
    (record,) = [r for r in caplog.records if "running remote code" in r.getMessage()]
    assert record.levelno == logging.WARNING and str(file) in record.getMessage()
    assert hashlib.sha256(file.read_bytes()).hexdigest() in record.getMessage()


# -- Hub details -------------------------------------------------------------------------------
def test_trusted_hub_checkpoint_fetches_its_code_once_and_reloads_offline(checkpoint, tmp_path, hub_server):
    sentinel = tmp_path / "c.ran"
    hub_server.add_commit("org/coded", with_component_code(with_class_code(checkpoint, sentinel), sentinel))
    pipe = DiffusionPipeline.from_pretrained("org/coded", trust_remote_code=True)
    assert type(pipe).__name__ == "RemoteToyPipeline" and type(pipe.scheduler).__name__ == "HalvingScheduler"
    fetched = [p for m, p in hub_server.calls() if m == "GET" and "/resolve/" in p]
    assert sorted(p.rsplit("/", 1)[-1] for p in fetched if p.endswith(".py")) == ["halving.py", "remote_pipe.py"]
    assert ran(sentinel) == 2  # each file once

    hub_server.clear()
    again = DiffusionPipeline.from_pretrained("org/coded", trust_remote_code=True, local_files_only=True)
    assert hub_server.calls() == [] and type(again).__name__ == "RemoteToyPipeline"
    with pytest.raises(RemoteCodeError, match="refusing to run remote_pipe.py of Hub repo 'org/coded'"):
        DiffusionPipeline.from_pretrained("org/coded", local_files_only=True)


def test_download_refuses_checkpoint_code_without_trust(checkpoint, tmp_path, hub_server):
    sentinel = tmp_path / "d.ran"
    hub_server.add_commit("org/dl", with_class_code(checkpoint, sentinel))
    with pytest.raises(RemoteCodeError, match="remote_pipe.py of Hub repo 'org/dl'"):
        DiffusionPipeline.download("org/dl")
    assert ran(sentinel) == 0 and "remote_pipe.py" not in hub_server.downloaded()
    # A concrete class never needs the checkpoint's code.
    pipe = ToyPipeline.from_pretrained("org/dl")
    assert type(pipe) is ToyPipeline and ran(sentinel) == 0 and "remote_pipe.py" not in hub_server.downloaded()


def test_hub_repo_without_pipeline_py(checkpoint, hub_server):
    hub_server.add_commit("org/empty", {"README.md": b"# nothing\n"})
    with pytest.raises(CheckpointError, match="Hub repo 'org/empty' has no pipeline.py at revision 'main'"):
        DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline="org/empty", trust_remote_code=True)


# -- malformed code ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "message", "ran_fully"),
    [
        ("def broken(:\n    pass\n", r"is not valid Python: .* \(line 1\)", False),
        ("import torch\nx = 1\n", "defines no subclass of Pipeline", True),
        ("from diffkit import Pipeline\nclass A(Pipeline):\n    pass\nclass B(A):\n    pass\n",
         r"defines several Pipeline subclasses \(A, B\); it must define exactly one", True),
        ("from diffkit_pipeline_ddim.pipeline import DDIMPipeline\n", "defines no subclass of Pipeline", True),
        ("from . import helpers\n", r"uses a relative import \(line 1\).*publish it as a package", False),
        ("import helpers_next_to_the_file\n", r"running .* failed: ModuleNotFoundError.*installed packages only",
         False),
        ("raise RuntimeError('boom')\n", r"running .* failed: RuntimeError: boom", False),
    ],
    ids=["syntax-error", "no-pipeline", "two-candidates", "imported-only", "relative-import", "missing-import",
         "raises"],
)
def test_malformed_code_gives_an_error_naming_the_file(checkpoint, tmp_path, source, message, ran_fully):
    file = tmp_path / "bad_pipeline.py"
    file.write_text(source)
    before = set(sys.modules)
    with pytest.raises(RemoteCodeError, match=message) as caught:
        DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline=file, trust_remote_code=True)
    assert str(file) in str(caught.value)
    left = [m for m in set(sys.modules) - before if m.startswith("diffkit_remote_bad_pipeline")]
    assert len(left) == int(ran_fully), "a module that failed to run must not stay in sys.modules"


def test_class_name_errors(checkpoint, tmp_path):
    with_class_code(checkpoint, tmp_path / "x.ran")
    edit_index(checkpoint, _class_name=["remote_pipe", "Missing"])
    with pytest.raises(RemoteCodeError, match=r"remote_pipe.py defines no class 'Missing' \(its Pipeline classes: "
                                              r"RemoteToyPipeline\)"):
        DiffusionPipeline.from_pretrained(checkpoint, trust_remote_code=True)
    edit_index(checkpoint, _class_name=["nowhere", "RemoteToyPipeline"])
    with pytest.raises(CheckpointError, match=r"names nowhere.py, which the checkpoint lacks"):
        DiffusionPipeline.from_pretrained(checkpoint, trust_remote_code=True)
    edit_index(checkpoint, _class_name=["sub.remote_pipe", "RemoteToyPipeline"])
    with pytest.raises(CheckpointError, match="plain module name"):
        DiffusionPipeline.from_pretrained(checkpoint, trust_remote_code=True)
    edit_index(checkpoint, _class_name=["../remote_pipe", "RemoteToyPipeline"])
    with pytest.raises(CheckpointError, match="'_class_name' must be a class name or"):
        DiffusionPipeline.from_pretrained(checkpoint, trust_remote_code=True)


def test_component_code_must_define_a_component_class(checkpoint, tmp_path):
    with_component_code(checkpoint, tmp_path / "y.ran")
    edit_index(checkpoint, scheduler=["halving", "HalvingState"])
    with pytest.raises(RemoteCodeError, match="HalvingState in .*halving.py is not a subclass of Model or Scheduler"):
        DiffusionPipeline.from_pretrained(checkpoint, trust_remote_code=True)


# -- custom_pipeline resolution ----------------------------------------------------------------
def test_custom_pipeline_by_registered_name_needs_no_trust(checkpoint, monkeypatch):
    monkeypatch.setenv(DISABLE, "1")  # an installed package is not remote code
    assert type(DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline="ToyPipeline")) is ToyPipeline


def test_trust_remote_code_must_be_a_bool(checkpoint, tmp_path):
    with_class_code(checkpoint, tmp_path / "t.ran")
    with pytest.raises(TypeError, match="trust_remote_code must be True or False, got 'yes'"):
        DiffusionPipeline.from_pretrained(checkpoint, trust_remote_code="yes")
    assert ran(tmp_path / "t.ran") == 0


def test_custom_pipeline_that_is_nothing_known(checkpoint, tmp_path):
    with pytest.raises(ComponentNotFoundError, match="No installed plugin provides pipeline 'NoSuchPipeline'"):
        DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline="NoSuchPipeline")
    with pytest.raises(CheckpointError, match="custom_pipeline 'missing.py' does not exist"):
        DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline="missing.py")
    (tmp_path / "no_code").mkdir()
    with pytest.raises(CheckpointError, match="custom_pipeline folder .*no_code has no pipeline.py"):
        DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline=tmp_path / "no_code")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is not a .py file"):
        DiffusionPipeline.from_pretrained(checkpoint, custom_pipeline=tmp_path / "notes.txt")


# -- the gate itself -------------------------------------------------------------------------------
def test_gate_executes_exactly_the_bytes_it_hashed(tmp_path, monkeypatch):
    """The file is read once: swapping it after the check changes nothing that runs."""
    file = tmp_path / "swap.py"
    file.write_text("VALUE = 'judged'\n")
    judged = file.read_bytes()
    real_read = Path.read_bytes
    reads = []

    def read_then_swap(self: Path) -> bytes:
        data = real_read(self)
        if self == file:
            reads.append(data)
            file.write_text("VALUE = 'swapped'\n")
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_swap)
    module = run_remote_module(CodeSource.local(file), trust_remote_code=True)
    assert len(reads) == 1
    assert module.VALUE == "judged" and module.__diffkit_sha256__ == hashlib.sha256(judged).hexdigest()


def test_gate_rules(tmp_path, monkeypatch):
    local = CodeSource.local(tmp_path / "f.py")
    hub = CodeSource.hub("org/r", "pipeline.py", "main")
    check_remote_code(local, trust_remote_code=True)
    check_remote_code(hub, trust_remote_code=True)
    with pytest.raises(RemoteCodeError, match="found inside the checkpoint"):
        check_remote_code(local, trust_remote_code=False)
    with pytest.raises(RemoteCodeError, match=r"pipeline.py of Hub repo 'org/r' \(revision 'main'\).*fetched from"):
        check_remote_code(hub, trust_remote_code=False)
    named = CodeSource.local(tmp_path / "f.py", named_by_caller=True)
    with pytest.raises(RemoteCodeError, match="named by custom_pipeline.*trust_remote_code is not set"):
        check_remote_code(named, trust_remote_code=False)
    for value, disabled in (("1", True), ("true", True), ("yes", True), ("2", True), ("0", False), ("false", False),
                            ("", False), ("off", False)):
        monkeypatch.setenv(DISABLE, value)
        assert remote_code_disabled() is disabled, value
    with pytest.raises(RemoteCodeError, match="trust_remote_code is not set"):
        check_remote_code(local, trust_remote_code="false")  # only a real True is consent
    monkeypatch.setenv(DISABLE, "1")
    for source in (local, named, hub):
        with pytest.raises(RemoteCodeError, match=DISABLE):
            check_remote_code(source, trust_remote_code=True)


def test_pick_class_explicit_name(tmp_path):
    file = tmp_path / "two.py"
    file.write_text("from diffkit import Pipeline\nclass A(Pipeline):\n    pass\nclass B(A):\n    pass\n"
                    "class NotOne:\n    pass\n")
    module = run_remote_module(CodeSource.local(file), trust_remote_code=True)
    from diffkit import Pipeline

    assert pick_class(module, Pipeline, what=str(file), class_name="B").__name__ == "B"
    with pytest.raises(RemoteCodeError, match="NotOne in .*two.py is not a subclass of Pipeline"):
        pick_class(module, Pipeline, what=str(file), class_name="NotOne")
