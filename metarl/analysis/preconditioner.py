"""The learned inner-loop preconditioner's spectra, per layer.

For ``algo.inner_update: kronecker`` every adapted weight matrix ``W (out,
in)`` steps as ``W - alpha L g R`` (:class:`metarl.inner_updates.kronecker.KroneckerStep`).
``L`` and ``R`` are not constrained to be symmetric, so their spread is read
from the eigenvalues of the **symmetric part** ``S = (M + M^T) / 2`` (real,
``torch.linalg.eigvalsh``), which governs ``<g, M g>`` (whether the step is
still a descent direction); how far ``M`` is from symmetric is reported
beside it as ``asymmetry = ||(M - M^T) / 2||_F / ||M||_F``.  At the
initialisation (identity) every eigenvalue is 1, the condition number 1 and
the asymmetry 0.  A vector parameter's learned diagonal ``d`` is its own
spectrum.

Convention for degenerate inputs: a condition number with a zero smallest
``|eigenvalue|`` is ``None`` (JSON ``null``), as is the asymmetry of a zero
matrix.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor


def spread(eigenvalues: Tensor) -> dict[str, float | None]:
    """``min``, ``max``, ``min_abs``, ``max_abs`` and ``condition = max_abs / min_abs`` of real values."""
    e = eigenvalues.detach().double().reshape(-1)
    a = e.abs()
    lo, hi = float(a.min()), float(a.max())
    return {"min": float(e.min()), "max": float(e.max()), "min_abs": lo, "max_abs": hi,
            "condition": hi / lo if lo > 0 else None}


def factor_spectrum(m: Tensor) -> dict[str, Any]:
    """Spread of the symmetric part's eigenvalues of a square ``m (k, k)``, and ``m``'s asymmetry."""
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(m.shape)}")
    m = m.detach().double()
    sym, skew = (m + m.T) / 2, (m - m.T) / 2
    norm = float(torch.linalg.norm(m))
    out: dict[str, Any] = spread(torch.linalg.eigvalsh(sym))
    out["asymmetry"] = float(torch.linalg.norm(skew)) / norm if norm > 0 else None
    out["size"] = int(m.shape[0])
    return out


def preconditioner_spectra(factors: dict[str, Tensor]) -> dict[str, dict[str, Any]] | None:
    """Per layer (``body.0``, ..., ``head``, ``log_std``), the spectra of its learned factors.

    ``factors``: a learner's ``precond_params`` (``"<param>/L"``,
    ``"<param>/R"``, ``"<param>/diag"``).  Returns ``{layer: {"weight.L":
    factor_spectrum, "weight.R": ..., "bias.diag": spread}}`` in the order of
    ``factors``, or ``None`` when there are none (``sgd``, ``meta_sgd``).
    """
    if not factors:
        return None
    out: dict[str, dict[str, Any]] = OrderedDict()
    for key, m in factors.items():
        param, part = key.rsplit("/", 1)
        layer, _, leaf = param.rpartition(".")
        layer = layer or param
        entry = f"{leaf}.{part}" if leaf != param else part
        out.setdefault(layer, OrderedDict())[entry] = factor_spectrum(m) if part in ("L", "R") else spread(m)
    return out


def format_spectra(spectra: dict[str, dict[str, Any]]) -> list[str]:
    """Plain-text table lines of :func:`preconditioner_spectra`."""
    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.4g}"

    lines = ["learned preconditioner: eigenvalues of the symmetric part (L, R) or the diagonal (diag)",
             f"{'layer':<10}  {'factor':<12}  {'min':>8}  {'max':>8}  {'min|e|':>8}  {'max|e|':>8}  "
             f"{'cond':>8}  {'asym':>8}"]
    for layer, parts in spectra.items():
        for name, s in parts.items():
            lines.append(f"{layer:<10}  {name:<12}  {fmt(s['min']):>8}  {fmt(s['max']):>8}  {fmt(s['min_abs']):>8}  "
                         f"{fmt(s['max_abs']):>8}  {fmt(s['condition']):>8}  {fmt(s.get('asymmetry')):>8}")
    return lines
