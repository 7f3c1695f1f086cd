"""DPM-Solver step coefficients (Lu et al. 2022, 2023), precomputed for a whole run.

A step ``s → t`` of any order is linear in the sample, the model-output history and the noise:
``x_t = A·x_s + Σ_j w_j·m_j + S·z`` with ``m_0`` the newest (converted) model output. The scalar
factors are computed here once per plan, vectorised over the steps, with the reference's float32
operations (so they agree to an ulp), and folded into the weights ``(A, w, S)`` in float64.
Steps then cost a handful of tensor operations with Python-float coefficients.

Notation: ``α_t``/``σ_t`` the VP signal and noise scales, ``λ = ln α - ln σ``, ``h = λ_t - λ_s``.
"""

from __future__ import annotations

import torch

#: one step: (sample weight A, history weights newest first, noise weight S)
Weights = tuple[float, tuple[float, ...], float]

ALGORITHMS = ("dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++")


def vp_alpha_sigma(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # α = 1/√(σ²+1), σ_t = σ·α  (σ the k-diffusion sigma)
    alpha = 1 / ((sigmas**2 + 1) ** 0.5)
    return alpha, sigmas * alpha


def flow_alpha_sigma(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # α = 1 - σ, σ_t = σ  (rectified flow x = (1-σ)·x0 + σ·ε)
    return 1 - sigmas, sigmas


def half_log_snr(alpha: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
    # λ = ln α - ln σ
    return torch.log(alpha) - torch.log(sigma_t)


def exponential_terms(
    algorithm: str, a_t: torch.Tensor, s_t: torch.Tensor, a_s: torch.Tensor, s_s: torch.Tensor, h: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The factors of one step: ``A`` (sample), ``K0`` (D0), ``Kmid``/``Kheun`` (D1), ``K2`` (D2), ``S`` (noise)."""
    zero = torch.zeros_like(h)
    if algorithm == "dpmsolver++":
        em = torch.exp(-h) - 1.0
        c = a_t * em
        # x_t = σ_t/σ_s·x - α_t(e^-h - 1)·D0 + …
        return {
            "A": s_t / s_s,
            "K0": -c,
            "Kmid": -(0.5 * c),
            "Kheun": a_t * (em / h + 1.0),
            "K2": -(a_t * ((torch.exp(-h) - 1.0 + h) / h**2 - 0.5)),
            "S": zero,
        }
    if algorithm == "dpmsolver":
        ep = torch.exp(h) - 1.0
        c = s_t * ep
        # x_t = α_t/α_s·x - σ_t(e^h - 1)·D0 + …
        return {
            "A": a_t / a_s,
            "K0": -c,
            "Kmid": -(0.5 * c),
            "Kheun": -(s_t * (ep / h - 1.0)),
            "K2": -(s_t * ((torch.exp(h) - 1.0 - h) / h**2 - 0.5)),
            "S": zero,
        }
    if algorithm == "sde-dpmsolver++":
        e2 = 1 - torch.exp(-2.0 * h)
        c = a_t * e2
        # x_t = σ_t/σ_s·e^-h·x + α_t(1 - e^-2h)·D0 + … + σ_t√(1 - e^-2h)·z
        return {
            "A": s_t / s_s * torch.exp(-h),
            "K0": c,
            "Kmid": 0.5 * c,
            "Kheun": a_t * ((1.0 - torch.exp(-2.0 * h)) / (-2.0 * h) + 1.0),
            "K2": a_t * ((1.0 - torch.exp(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5),
            "S": s_t * torch.sqrt(1.0 - torch.exp(-2 * h)),
        }
    if algorithm == "sde-dpmsolver":
        ep = torch.exp(h) - 1.0
        c = s_t * ep
        # x_t = α_t/α_s·x - 2σ_t(e^h - 1)·D0 + … + σ_t√(e^2h - 1)·z
        return {
            "A": a_t / a_s,
            "K0": -(2.0 * c),
            "Kmid": -c,
            "Kheun": -(2.0 * (s_t * (ep / h - 1.0))),
            "K2": torch.full_like(h, float("nan")),
            "S": s_t * torch.sqrt(torch.exp(2 * h) - 1.0),
        }
    raise ValueError(f"algorithm_type {algorithm!r} is unknown; allowed values: {', '.join(ALGORITHMS)}")


def _rows(a: torch.Tensor, ws: list[torch.Tensor], s: torch.Tensor) -> list[Weights]:
    cols = [a.double().tolist(), *(w.tolist() for w in ws), s.double().tolist()]
    return [(r[0], tuple(r[1:-1]), r[-1]) for r in zip(*cols, strict=True)]


def _index(n: int, back: int) -> torch.Tensor:
    return (torch.arange(n) - back).clamp(min=0)


def multistep_weights(
    algorithm: str,
    solver_type: str,
    order: int,
    alpha: torch.Tensor,
    sigma_t: torch.Tensor,
    lam: torch.Tensor,
) -> list[Weights]:
    """Per-step weights of the multistep solver of ``order`` from point ``i`` to ``i+1``.

    ``alpha``, ``sigma_t``, ``lam`` hold ``α``, ``σ_t``, ``λ`` at the run's ``N+1`` sigmas. Rows
    whose history reaches before the start are meaningless (never used).
    """
    n = lam.shape[0] - 1
    t, s0, s1, s2 = torch.arange(1, n + 1), _index(n, 0), _index(n, 1), _index(n, 2)
    h = lam[t] - lam[s0]
    k = exponential_terms(algorithm, alpha[t], sigma_t[t], alpha[s0], sigma_t[s0], h)
    k0 = k["K0"].double()
    if order == 1:
        return _rows(k["A"], [k0], k["S"])
    r0f = (lam[s0] - lam[s1]) / h
    if order == 2:
        # x_t = A·x + K0·D0 + K1·D1 with D0 = m0, D1 = (1/r0)·(m0 - m1): kept apart (see ``second_order_terms``)
        return _rows(k["A"], [k0, k["Kmid" if solver_type == "midpoint" else "Kheun"].double(), (1.0 / r0f).double()], k["S"])
    r0 = r0f.double()
    r1 = ((lam[s1] - lam[s2]) / h).double()
    k1, k2 = k["Kheun"].double(), k["K2"].double()
    a, b, g, q = 1 / r0, 1 / r1, r0 / (r0 + r1), 1 / (r0 + r1)
    # D1 = (1+g)·D1_0 - g·D1_1, D2 = q·(D1_0 - D1_1), D1_0 = (m0-m1)/r0, D1_1 = (m1-m2)/r1, g = r0/(r0+r1)
    w0 = k0 + k1 * (1 + g) * a + k2 * q * a
    w1 = -k1 * ((1 + g) * a + g * b) - k2 * q * (a + b)
    w2 = k1 * g * b + k2 * q * b
    return _rows(k["A"], [w0, w1, w2], k["S"])


def singlestep_weights(
    algorithm: str,
    solver_type: str,
    order: int,
    alpha: torch.Tensor,
    sigma_t: torch.Tensor,
    lam: torch.Tensor,
) -> list[Weights]:
    """Per-step weights of a single-step solver stage ending at ``i+1``, started ``order-1`` points earlier.

    The sample weight applies to the sample saved at the stage's start ``i-order+1``; the history
    holds the model outputs at ``i, i-1, …``.
    """
    n = lam.shape[0] - 1
    t, s0, s1, s2 = torch.arange(1, n + 1), _index(n, 0), _index(n, 1), _index(n, 2)
    start = (s0, s1, s2)[order - 1]
    h = lam[t] - lam[start]
    k = exponential_terms(algorithm, alpha[t], sigma_t[t], alpha[start], sigma_t[start], h)
    k0 = k["K0"].double()
    if order == 1:
        return _rows(k["A"], [k0], k["S"])
    r0f = (lam[s0] - lam[start]) / h
    if order == 2:
        # x_t = A·x_s1 + K0·D0 + K1·D1 with D0 = m1, D1 = (1/r0)·(m0 - m1)
        return _rows(k["A"], [k0, k["Kmid" if solver_type == "midpoint" else "Kheun"].double(), (1.0 / r0f).double()], k["S"])
    r0 = r0f.double()
    r1 = ((lam[s1] - lam[s2]) / h).double()
    kh = k["Kheun"].double()
    if solver_type == "midpoint":
        # D0 = m2, D1_1 = (m0 - m2)/r0
        return _rows(k["A"], [kh / r0, torch.zeros_like(r0), k0 - kh / r0], k["S"])
    k2 = k["K2"].double()
    d = r0 - r1
    # D1 = (r0·(m1-m2)/r1 - r1·(m0-m2)/r0)/(r0-r1),  D2 = 2·((m0-m2)/r0 - (m1-m2)/r1)/(r0-r1)
    w0 = kh * (-r1 / r0) / d + k2 * 2 / (r0 * d)
    w1 = kh * (r0 / r1) / d - k2 * 2 / (r1 * d)
    w2 = k0 + kh * (r1 / r0 - r0 / r1) / d + k2 * 2 * (1 / r1 - 1 / r0) / d
    return _rows(k["A"], [w0, w1, w2], k["S"])


def second_order_terms(ws: tuple[float, ...], m0: torch.Tensor, m1: torch.Tensor, d0: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
    """``[(K0, D0), (K1, D1)]`` with ``D1 = (1/r0)·(m0 - m1)`` rounded as the reference rounds it."""
    k0, k1, inv_r0 = ws
    return [(k0, d0), (k1, torch.sub(m0, m1).mul_(inv_r0))]


def combine(sample: torch.Tensor, a: float, terms: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """``a·sample + Σ w·t``, each product rounded in its tensor's dtype before the sum, as the reference does."""
    out = torch.mul(sample, a)
    buf: torch.Tensor | None = None
    for w, t in terms:
        if t.shape == out.shape and torch.result_type(out, t) == out.dtype:
            reuse = buf is not None and buf.dtype == t.dtype
            buf = torch.mul(t, w, out=buf) if reuse else torch.mul(t, w)
            out.add_(buf)
        else:
            out = out + w * t
    return out


def sub_scaled(x: torch.Tensor, w: float, y: torch.Tensor) -> torch.Tensor:
    # x - w·y, the product rounded first
    return x - torch.mul(y, w)
