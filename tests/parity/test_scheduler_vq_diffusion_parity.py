"""VQDiffusionScheduler gives diffusers' numbers: log tables, posteriors and the drawn indices."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit_scheduler_vq_diffusion.vq_diffusion import VQDiffusionScheduler  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402

torch.set_num_threads(1)

REF = diffusers.VQDiffusionScheduler
TABLES = ("log_at", "log_bt", "log_ct", "log_cumprod_at", "log_cumprod_bt", "log_cumprod_ct")


@settings(max_examples=20, deadline=None)
@given(
    classes=st.sampled_from([2, 5, 17]),
    t_train=st.sampled_from([100, 100, 12]),
    ends=st.sampled_from([(0.99999, 0.000009, 0.000009, 0.99999), (0.9, 0.01, 0.05, 0.9)]),
    data=st.data(),
    api=st.sampled_from(["plan", "legacy"]),
    seed=st.integers(0, 999),
)
def test_sampling_chain(classes, t_train, ends, data, api, seed):
    a_start, a_end, g_start, g_end = ends
    cfg = {"num_vec_classes": classes, "num_train_timesteps": t_train, "alpha_cum_start": a_start,
           "alpha_cum_end": a_end, "gamma_cum_start": g_start, "gamma_cum_end": g_end}
    ours, ref = VQDiffusionScheduler(**cfg), REF(**cfg)
    for name in TABLES:
        assert_matches(getattr(ours, name), getattr(ref, name), name)
    n = data.draw(st.integers(1, t_train))
    ref.set_timesteps(n)
    if api == "legacy":
        ours.set_timesteps(n)
        state = ours
    else:
        state = ours.plan(n)
    assert state.timesteps.tolist() == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(seed)
    pixels = 12
    x = torch.full((2, pixels), classes - 1)  # all masked, as sampling starts
    x[0, :3] = torch.randint(0, classes - 1, (3,), generator=g)
    y = x.clone()
    g_ours, g_ref = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for t, rt in zip(state.timesteps, ref.timesteps, strict=True):
        log_p_x0 = torch.log_softmax(torch.randn(2, classes - 1, pixels, generator=g), dim=1)
        if int(t) > 0:
            assert_matches(state.q_posterior(log_p_x0, x, t), ref.q_posterior(log_p_x0, y, rt))
        x = state.step(log_p_x0, t, x, generator=g_ours).prev_sample
        y = ref.step(log_p_x0, rt, y, generator=g_ref).prev_sample
        assert x.dtype == y.dtype == torch.int64 and torch.equal(x, y)


def test_config_files_interoperate(tmp_path):
    ours, ref = VQDiffusionScheduler(num_vec_classes=4097), REF(num_vec_classes=4097)
    ours.save_pretrained(tmp_path / "ours")
    ref.save_pretrained(tmp_path / "ref")
    fields = ours.config.model_dump()
    assert {k: REF.from_pretrained(tmp_path / "ours").config[k] for k in fields} == fields
    assert VQDiffusionScheduler.from_pretrained(tmp_path / "ref").config.model_dump() == fields
    mine = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "scheduler_config.json").read_text())
    assert {k: v for k, v in mine.items() if k != "_diffusers_version"} == {
        k: v for k, v in theirs.items() if k != "_diffusers_version"
    }
