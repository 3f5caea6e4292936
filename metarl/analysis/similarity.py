"""Similarity of two representations of the same inputs (pure functions).

Both functions compare ``x (n_samples, d1)`` and ``y (n_samples, d2)``: row
``i`` of each is the representation of the same input (e.g. one layer's
activations on state ``i`` before and after adaptation).  Feature counts may
differ.  Inputs may be numpy arrays or torch tensors of any real dtype; all
computation is in float64.  Results lie in ``[0, 1]``.

* :func:`linear_cka`: linear centred kernel alignment (Kornblith et al.
  2019).  Invariant to orthogonal transforms and isotropic scaling of either
  representation, not to arbitrary invertible linear maps.
* :func:`cca_similarity`: SVCCA-style mean canonical correlation (Raghu et
  al. 2017): optionally keep the top singular directions of each
  representation, then the canonical correlations between the two subspaces.
  Invariant to any invertible linear map when nothing is truncated.

Conventions for degenerate inputs: a representation identical to the other
scores exactly 1.0; two representations that are both constant over the
samples score 1.0 (neither distinguishes any inputs); a constant
representation against a varying one scores 0.0.  CCA needs many more
samples than kept dimensions: with ``n <= d1 + d2`` any two subspaces share
directions and the score is meaningless.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Singular values below this fraction of the largest are treated as zero
# (rank deficiency, duplicated or constant columns).
DEFAULT_EPS = 1e-10


def _as_matrix(a: Any, name: str) -> np.ndarray:
    """``a`` as a float64 ``(n, d)`` array; 1-D input is one feature."""
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().double().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n_samples, features), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xm, ym = _as_matrix(x, "x"), _as_matrix(y, "y")
    if xm.shape[0] != ym.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {xm.shape[0]} and {ym.shape[0]}")
    if xm.shape[0] < 2:
        raise ValueError(f"need at least 2 samples, got {xm.shape[0]}")
    if xm.shape[1] == 0 or ym.shape[1] == 0:
        raise ValueError(f"x and y need at least one feature, got shapes {xm.shape} and {ym.shape}")
    return xm, ym


def _centred(a: np.ndarray) -> np.ndarray:
    """Column-centred copy, scaled to unit Frobenius norm (0 if constant).

    The scale makes every later product well inside float64 range and does
    not change either similarity.
    """
    c = a - a.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(c)
    # Centring leaves round-off of order eps * |a| in constant columns.
    tol = 64 * np.finfo(np.float64).eps * max(float(np.abs(a).max()), 1e-300) * math.sqrt(c.size)
    if norm <= tol:
        return np.zeros_like(c)
    return c / norm


def _degenerate(xc: np.ndarray, yc: np.ndarray) -> float | None:
    """Score for constant representations, or ``None`` if both vary."""
    x_const, y_const = not xc.any(), not yc.any()
    if x_const and y_const:
        return 1.0
    if x_const or y_const:
        return 0.0
    return None


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA between ``x (n, d1)`` and ``y (n, d2)``.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with ``Xc``,
    ``Yc`` the column-centred representations; this equals HSIC of the
    linear kernels ``Xc Xc^T`` and ``Yc Yc^T`` normalised by their own HSICs.
    Costs ``O(n (d1 + d2)^2)``, never forming ``n x n`` matrices.
    """
    xm, ym = _pair(x, y)
    if xm.shape == ym.shape and np.array_equal(xm, ym):
        return 1.0
    xc, yc = _centred(xm), _centred(ym)
    special = _degenerate(xc, yc)
    if special is not None:
        return special
    cross = np.linalg.norm(yc.T @ xc) ** 2
    norm_x = np.linalg.norm(xc.T @ xc)
    norm_y = np.linalg.norm(yc.T @ yc)
    return float(np.clip(cross / (norm_x * norm_y), 0.0, 1.0))


def _basis(c: np.ndarray, keep: float | int | None, eps: float) -> np.ndarray:
    """Orthonormal basis ``(n, k)`` of the kept directions of centred ``c (n, d)``.

    Directions are the left singular vectors; those with singular value
    ``<= eps * s_max`` are dropped (numerical rank), then ``keep`` selects
    the top ones: a fraction of the variance (sum of squared singular
    values) to keep, or a number of directions.
    """
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    rank = int(np.sum(s > eps * s[0]))
    u, s = u[:, :rank], s[:rank]
    if keep is None:
        k = rank
    elif isinstance(keep, int | np.integer) and not isinstance(keep, bool):
        k = min(int(keep), rank)
    else:
        var = np.cumsum(s**2)
        # smallest k whose leading directions explain >= keep of the variance
        k = int(np.searchsorted(var, float(keep) * var[-1] * (1 - 1e-12))) + 1
        k = min(k, rank)
    return u[:, :k]


def _check_keep(keep: float | int | None) -> None:
    if keep is None:
        return
    if isinstance(keep, bool):
        raise ValueError(f"keep must be a fraction in (0, 1], a positive int or None, got {keep!r}")
    if isinstance(keep, int | np.integer):
        if keep < 1:
            raise ValueError(f"keep as a number of directions must be >= 1, got {keep}")
        return
    if not (0.0 < float(keep) <= 1.0):
        raise ValueError(f"keep as a variance fraction must be in (0, 1], got {keep}")


def canonical_correlations(x: Any, y: Any, keep: float | int | None = 0.99,
                           eps: float = DEFAULT_EPS) -> np.ndarray:
    """Canonical correlations of ``x (n, d1)`` and ``y (n, d2)``, descending: ``(k,)``.

    ``k = min(kx, ky)``, the numbers of directions kept of each (see
    :func:`cca_similarity`).  Empty if either representation is constant.
    """
    _check_keep(keep)
    xm, ym = _pair(x, y)
    xc, yc = _centred(xm), _centred(ym)
    if not xc.any() or not yc.any():
        return np.zeros(0)
    qx, qy = _basis(xc, keep, eps), _basis(yc, keep, eps)
    # The singular values of Qx^T Qy are the cosines of the principal angles
    # between the two subspaces, i.e. the canonical correlations.
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return np.clip(rho, 0.0, 1.0)


def cca_similarity(x: Any, y: Any, keep: float | int | None = 0.99, eps: float = DEFAULT_EPS) -> float:
    """Mean canonical correlation between ``x (n, d1)`` and ``y (n, d2)`` (SVCCA).

    1. centre the columns of each representation;
    2. SVD; drop directions with singular value ``<= eps * s_max``
       (rank-deficient or constant columns), then keep the top directions:
       ``keep`` in ``(0, 1]`` keeps the fewest explaining that fraction of the
       variance (0.99 as in SVCCA), an int keeps that many, ``None`` keeps all;
    3. orthonormal bases ``Qx``, ``Qy`` of the kept directions are whitened
       versions of the data, so the canonical correlations are the singular
       values of ``Qx^T Qy``;
    4. return their mean over ``min(kx, ky)`` pairs.
    """
    _check_keep(keep)
    xm, ym = _pair(x, y)
    if xm.shape == ym.shape and np.array_equal(xm, ym):
        return 1.0
    special = _degenerate(_centred(xm), _centred(ym))
    if special is not None:
        return special
    rho = canonical_correlations(xm, ym, keep, eps)
    return float(np.clip(rho.mean(), 0.0, 1.0))
