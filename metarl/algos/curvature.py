"""Gauss-Newton curvature of the outer step's mean KL, through the inner loop.

At the old meta-parameters θ the mean KL between the adapted policies that
collected the validation episodes and the adapted policies ``π_{θ'(θ)}`` is
zero with zero gradient w.r.t. the policy outputs, so its Hessian w.r.t. θ is
exactly ``Jᵀ F J``:

* ``J = ∂θ'/∂θ``, the Jacobian of the inner loop.  One step
  ``θ_i = θ_{i-1} - α ⊙ g(θ_{i-1})`` (``g`` the inner-loss gradient, ``H`` its
  Hessian at ``θ_{i-1}``) has ``J_i = I - D H`` on the policy parameters, ``D``
  the diagonal of step sizes (α on adapted entries, 0 on the others), and
  ``-diag(g)`` on Meta-SGD's step sizes.  k steps: ``J = J_k ... J_1``, so
  ``J v`` runs the steps forwards (``u ← u - D H u - v_α ⊙ g``) and ``Jᵀ w``
  backwards (``w ← w - H D w``, ``w_α -= Σ_tasks g ⊙ w``).  ``H`` is symmetric,
  so both need only ``H d``, a Hessian-vector product of the inner loss on the
  train batch: in closed form for MAML (:class:`MLPStep`, forward-mode through
  the cached forward and backward passes) and ANIL (:class:`HeadStep`), else
  one double backward ``H d = ∂(g · d)/∂θ``.  First order: the inner
  gradients are constants, so ``J = I`` (plus the Meta-SGD term).
* ``F`` is the Fisher of the diagonal Gaussian at the adapted parameters on
  the validation observations, with the mean KL's own weights.  The KL code
  (``maml_trpo._surrogate_kl``) takes ``mean_n [Σ_s m_ns KL_ns / max(1, Σ_s
  m_ns)]`` of ``KL(old || new)`` summed over action dims, whose Hessian in the
  outputs at ``new = old`` is ``1/σ²`` per mean entry and ``2`` per log-std
  entry.  So with ``w_ns = m_ns / (N max(1, Σ_s m_ns))``:
  ``Fu = J_μᵀ (w σ⁻² J_μ u) + 2 (Σ_s w_ns) u_logstd``.  ``J_μ`` (a forward-mode
  tangent) and ``J_μᵀ`` go through the policy's layers with their
  activations cached once per outer step (:class:`MLPLinearization`).

ANIL (only the head adapts, the body is fixed in the inner loop): the body's
features ``Φ`` on the train and ``Ψ`` on the valid observations are computed
once.  The inner loss is differentiated as a function of ``(Φ, log_std,
head)``; the body's tangent enters through ``J_Φ v_body`` and its cotangent
leaves through ``J_Φᵀ``, so no product differentiates through the body twice.
Under ANIL, J differs from I only in the head's rows: ``∂θ'_head/∂θ_body =
-α ∂g_head/∂Φ J_Φ`` and ``∂θ'_head/∂log_std`` are not zero, so J is not
symmetric there and :class:`HeadStep` supplies both directions.

Shapes: ``N`` tasks, ``M = T*B`` steps per task; adapted tensors are stacked
``(N, *shape)``, the others shared ``(*shape)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import Tensor

from metarl.adaptation import vpg_loss
from metarl.episodes import EpisodeBatch
from metarl.inner_updates import StepSize
from metarl.policies import GaussianMLPPolicy, unflatten

T = TypeVar("T")


class MLPLinearization:
    """The policy's layers ``layers`` (prefixes, in order) linearized at ``params`` on ``x``.

    ``x``: (N, M, in).  Each body layer is ``act(x W^T + b)``, the head is
    linear.  The layer inputs and activation slopes are cached, so
    :meth:`jvp` and :meth:`vjp` are a few batched matmuls.  Parameters may be
    stacked ``(N, ...)`` or shared; cotangents come back in the same shape.
    """

    def __init__(self, policy: GaussianMLPPolicy, x: Tensor, params: Mapping[str, Tensor], layers: Sequence[str]):
        self.layers = list(layers)
        self.params = params
        self.inputs: list[Tensor] = []
        self.slopes: list[Tensor | None] = []
        act = {"tanh": torch.tanh, "relu": torch.relu}[policy.activation]
        with torch.no_grad():
            for name in self.layers:
                self.inputs.append(x)
                w, b = params[f"{name}.weight"], params[f"{name}.bias"]
                pre = torch.matmul(x, w.transpose(-1, -2)) + (b.unsqueeze(-2) if b.dim() == 2 else b)
                if name.startswith("body."):
                    x = act(pre)
                    self.slopes.append(1 - x * x if policy.activation == "tanh" else (pre > 0).to(x.dtype))
                else:
                    x = pre
                    self.slopes.append(None)
        self.output = x  # (N, M, out)

    def jvp(self, tangent: Mapping[str, Tensor], x_dot: Tensor | None = None) -> Tensor:
        """Output tangent ``(N, M, out)`` for parameter tangents ``tangent`` (and an input tangent)."""
        y = x_dot
        for name, x, slope in zip(self.layers, self.inputs, self.slopes):
            w = self.params[f"{name}.weight"]
            out = _affine(x, tangent[f"{name}.weight"], tangent[f"{name}.bias"])
            if y is not None:
                out = _affine(y, w, None, out)
            y = out if slope is None else out.mul_(slope)
        assert y is not None
        return y

    def vjp(self, cot: Tensor, need_input: bool = False) -> tuple[dict[str, Tensor], Tensor | None]:
        """Parameter cotangents for an output cotangent ``cot (N, M, out)`` (and the input's)."""
        grads: dict[str, Tensor] = {}
        z = cot
        for i in reversed(range(len(self.layers))):
            name, x, slope = self.layers[i], self.inputs[i], self.slopes[i]
            if slope is not None:
                z = z * slope
            w = self.params[f"{name}.weight"]
            if w.dim() == 3:
                grads[f"{name}.weight"] = torch.matmul(z.transpose(-1, -2), x)
                grads[f"{name}.bias"] = z.sum(-2)
            else:  # shared across tasks: sum over tasks and steps in one matmul
                zz, xx = z.reshape(-1, z.shape[-1]), x.reshape(-1, x.shape[-1])
                grads[f"{name}.weight"] = zz.t() @ xx
                grads[f"{name}.bias"] = zz.sum(0)
            if i > 0 or need_input:
                z = torch.matmul(z, w)
        return grads, (z if need_input else None)


def _affine(x: Tensor, w: Tensor, b: Tensor | None, acc: Tensor | None = None) -> Tensor:
    """``x w^T + b`` (or ``acc += x w^T`` in place) in one BLAS call.

    ``x (N, M, in)``; ``w (out, in)`` with ``b (out,)``, or ``w (N, out, in)``
    with ``b (N, out)``; ``acc (N, M, out)``.
    """
    if w.dim() == 3:
        if acc is not None:
            return acc.baddbmm_(x, w.transpose(-1, -2))
        return torch.baddbmm(b.unsqueeze(-2), x, w.transpose(-1, -2)) if b is not None else x @ w.transpose(-1, -2)
    n, m, d = x.shape
    flat = x.reshape(n * m, d)
    if acc is not None:
        acc.view(n * m, -1).addmm_(flat, w.t())
        return acc
    out = torch.addmm(b, flat, w.t()) if b is not None else flat @ w.t()
    return out.view(n, m, -1)


class HeadStep:
    """One ANIL inner step in closed form: the VPG loss of a linear head on fixed features.

    ``L = Σ_n -Σ_s c_ns log N(a_ns; W_n φ_ns + b_n, σ²)`` with ``c = A m / max(1, Σ_s m)``,
    ``φ (N, M, h)``, ``W (N, act, h)``, ``b (N, act)``, shared ``log_std (act,)``.
    With ``r = a - μ`` and ``e = σ⁻²``: ``δ = ∂L/∂μ = -c r e``, ``g_W = δᵀ φ``,
    ``g_b = Σ_s δ``; ``∂δ/∂μ = c e`` and ``∂δ/∂log_std = 2 c r e``.  :meth:`forward`
    is the directional derivative of ``(g_W, g_b)`` along ``(φ̇, log_std̊, Ẇ, ḃ)`` and
    :meth:`backward` its transpose, i.e. the head rows and columns of the inner
    Hessian in the variables ``(φ, log_std, W, b)``.
    """

    def __init__(self, phi: Tensor, weight: Tensor, bias: Tensor, log_std: Tensor, actions: Tensor, c: Tensor):
        self.phi, self.weight = phi, weight
        mean = torch.baddbmm(bias.unsqueeze(-2), phi, weight.transpose(-1, -2))
        self.r = actions - mean  # (N, M, act)
        self.ce = c * torch.exp(-2 * log_std)  # (N, M, act)
        self.delta = -self.ce * self.r
        self.grads = [self.delta.transpose(-1, -2) @ phi, self.delta.sum(-2)]

    def forward(self, phi_dot: Tensor | None, log_std_dot: Tensor, w_dot: Tensor, b_dot: Tensor) -> list[Tensor]:
        mean_dot = torch.baddbmm(b_dot.unsqueeze(-2), self.phi, w_dot.transpose(-1, -2))
        if phi_dot is not None:
            mean_dot.baddbmm_(phi_dot, self.weight.transpose(-1, -2))
        delta_dot = self.ce * (mean_dot + 2 * self.r * log_std_dot)
        gw_dot = delta_dot.transpose(-1, -2) @ self.phi
        if phi_dot is not None:
            gw_dot.baddbmm_(self.delta.transpose(-1, -2), phi_dot)
        return [gw_dot, delta_dot.sum(-2)]

    def backward(self, u_w: Tensor, u_b: Tensor) -> list[Tensor]:
        rho = torch.baddbmm(u_b.unsqueeze(-2), self.phi, u_w.transpose(-1, -2))  # cotangent of δ
        kappa = rho * self.ce  # cotangent of μ
        cot_phi = torch.bmm(self.delta, u_w).baddbmm_(kappa, self.weight)
        cot_ls = 2 * (kappa * self.r).sum((0, 1))
        return [cot_phi, cot_ls, kappa.transpose(-1, -2) @ self.phi, kappa.sum(-2)]


class MLPStep:
    """One MAML inner step in closed form: the VPG loss's gradient and Hessian-vector products.

    Every parameter is stacked per task.  Body layers ``h = act(x Wᵀ + b)``
    (slope ``s``), head ``μ = h Wᵀ + b``, per-task ``log_std``; with ``r = a - μ``,
    ``e = σ⁻²`` and ``c = A m / max(1, Σ_s m)``: ``δ = ∂L/∂μ = -c r e`` and
    ``∂L/∂log_std = Σ_s c (1 - r² e)``, then backpropagation.  :meth:`hvp` is
    the directional derivative of that gradient (forward-mode through the
    cached forward and backward passes): ``H d`` with ``H`` the (symmetric)
    inner-loss Hessian, one task block per task.
    """

    def __init__(self, policy: GaussianMLPPolicy, obs: Tensor, actions: Tensor, c: Tensor,
                 params: Mapping[str, Tensor]):
        self.tanh = policy.activation == "tanh"
        self.layers = policy.layer_names()
        self.params = params
        self.lin = MLPLinearization(policy, obs, params, self.layers)
        self.log_std = params["log_std"].unsqueeze(-2)  # (N, 1, act)
        self.r = actions - self.lin.output
        self.ce = c * torch.exp(-2 * self.log_std)
        self.c = c
        delta = -self.ce * self.r
        self.eps: list[Tensor] = []  # cotangent of each layer's pre-activation (the head's is δ)
        # tanh: s = 1 - h², so the slope's tangent is ṡ = -2 h ḣ (h the layer's output), and the
        # backward pass's term β ṡ (β the output's cotangent) is (-2 β h) ḣ: its first factor is
        # the same in every product, so it is formed once here, per body layer.  relu: ṡ = 0.
        self.curv: dict[int, Tensor] = {}
        grads = {"log_std": (c * (1 - self.r * self.r * torch.exp(-2 * self.log_std))).sum(-2)}
        z = delta
        for i in reversed(range(len(self.layers))):
            name, slope = self.layers[i], self.lin.slopes[i]
            if slope is not None:
                z = z * slope
            self.eps.append(z)
            grads[f"{name}.weight"] = z.transpose(-1, -2) @ self.lin.inputs[i]
            grads[f"{name}.bias"] = z.sum(-2)
            if i > 0:
                z = z @ params[f"{name}.weight"]  # β of body layer i - 1
                if self.tanh:
                    self.curv[i - 1] = -2 * z * self.lin.inputs[i]
        self.eps.reverse()
        self.grads = grads

    def hvp(self, d: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``H d`` for a stacked tangent ``d`` (same keys and shapes as the parameters)."""
        lin, layers = self.lin, self.layers
        x_dots: list[Tensor | None] = []
        y: Tensor | None = None
        for i, name in enumerate(layers):  # forward tangents of every layer input
            x_dots.append(y)
            out = _affine(lin.inputs[i], d[f"{name}.weight"], d[f"{name}.bias"])
            if y is not None:
                out = _affine(y, self.params[f"{name}.weight"], None, out)
            slope = lin.slopes[i]
            if slope is not None:
                out = out.mul_(slope)
            y = out
        assert y is not None
        ls_dot = d["log_std"].unsqueeze(-2)
        tmp = y + self.r * ls_dot  # μ̇ + r ls̊
        res = {"log_std": (2 * self.ce * self.r * tmp).sum(-2)}
        z_dot = self.ce * (tmp + self.r * ls_dot)  # δ̇ = c e (μ̇ + 2 r ls̊)
        for i in reversed(range(len(layers))):
            name = layers[i]
            if lin.slopes[i] is not None:  # z_dot is this product's own tensor (from bmm): in place
                z_dot.mul_(lin.slopes[i])
                if i in self.curv:
                    z_dot.addcmul_(self.curv[i], x_dots[i + 1])  # + β ṡ, ḣ = the next layer's input tangent
            eps, x, x_dot = self.eps[i], lin.inputs[i], x_dots[i]
            gw = z_dot.transpose(-1, -2) @ x
            if x_dot is not None:
                gw.baddbmm_(eps.transpose(-1, -2), x_dot)
            res[f"{name}.weight"] = gw
            res[f"{name}.bias"] = z_dot.sum(-2)
            if i > 0:  # tangent of the cotangent of the layer's input
                z_dot = torch.bmm(z_dot, self.params[f"{name}.weight"]).baddbmm_(eps, d[f"{name}.weight"])
        return res


def _kl_weights(mask: Tensor) -> Tensor:
    """``w_ns = m_ns / (N max(1, Σ_s m_ns))`` of the mean KL: mask (N, T, B) -> (N, M)."""
    n = mask.shape[0]
    m = mask.reshape(n, -1)
    return m / (n * m.sum(1, keepdim=True).clamp(min=1))


def gauss_newton_product(policy: GaussianMLPPolicy, params: Mapping[str, Tensor], lr: StepSize,
                         names: Sequence[str], steps: int, first_order: bool, train: EpisodeBatch,
                         train_adv: Tensor, valid: EpisodeBatch) -> Callable[[Tensor], Tensor]:
    """``v -> Jᵀ F J v``: the Hessian of the mean KL of these tasks w.r.t. the meta-parameters.

    ``params``: the policy's meta-parameters (unstacked); ``lr``: the scalar
    step size or Meta-SGD's per-parameter tensors (the rules whose
    ``InnerUpdate.gauss_newton`` is true) (then also meta-parameters,
    after the policy's in the flat vector).  ``v`` and the result are flat
    ``(P,)`` in the order of ``params`` then ``lr``.  Everything that does not
    depend on ``v`` (inner gradients with their graphs, cached activations) is
    built here, once.
    """
    names = list(names)
    meta = OrderedDict((k, t.detach()) for k, t in params.items())
    meta_sgd = isinstance(lr, Mapping)
    lrs = OrderedDict((k, (lr[k].detach() if meta_sgd else lr)) for k in names)  # type: ignore[index]
    layout: dict[str, Tensor] = OrderedDict(meta)
    if meta_sgd:
        layout.update((f"lr/{k}", lrs[k]) for k in names)
    n = train.num_tasks
    body = [f"body.{i}" for i in range(len(policy.body))]
    body_fixed = not any(k.startswith("body.") for k in names)
    fixed = [k for k in meta if k not in names]
    # -- the inner loop, each step's gradient kept with its graph ----------------
    train_lin = MLPLinearization(policy, train.flat_obs(), meta, body) if body_fixed and steps > 0 else None
    phi = train_lin.output.requires_grad_() if train_lin is not None else None
    # shared inputs of the inner loss: the fixed params (ANIL: only those outside the body, plus Φ)
    shared_names = [k for k in fixed if not (body_fixed and k.startswith("body."))]
    shared = OrderedDict((k, meta[k].clone().requires_grad_()) for k in shared_names)
    fast = OrderedDict((k, meta[k].unsqueeze(0).expand(n, *meta[k].shape)) for k in names)
    inner: list[tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]] = []  # z, adapted leaves, g_all, g
    head_steps: list[HeadStep] = []
    closed_form = phi is not None and names == policy.head_names() and shared_names == ["log_std"]
    if closed_form:
        assert phi is not None
        phi = phi.detach()
        m = train.mask.reshape(n, -1, 1)
        c = train_adv.detach().reshape(n, -1, 1) * m / m.sum(1, keepdim=True).clamp(min=1)
    mlp_steps: list[MLPStep] = []
    full_form = not closed_form and names == list(meta) and not first_order
    if full_form:
        m = train.mask.reshape(n, -1, 1)
        c = train_adv.detach().reshape(n, -1, 1) * m / m.sum(1, keepdim=True).clamp(min=1)
    for _ in range(steps):
        if full_form:
            mlp_steps.append(MLPStep(policy, train.flat_obs(), train.flat_actions(), c, fast))
            g = [mlp_steps[-1].grads[k] for k in names]
            inner.append(([], [], [], g))
            fast = OrderedDict((k, fast[k] - lrs[k] * gk) for k, gk in zip(names, g))
            continue
        if closed_form:
            head_steps.append(HeadStep(phi, fast["head.weight"], fast["head.bias"], meta["log_std"],
                                       train.flat_actions(), c))
            g = head_steps[-1].grads
            inner.append(([], [], [], g))
            fast = OrderedDict((k, fast[k] - lrs[k] * gk) for k, gk in zip(names, g))
            continue
        leaves = [fast[k].detach().requires_grad_() for k in names]
        inputs = OrderedDict(meta)
        inputs.update(shared)
        inputs.update(zip(names, leaves))
        z = ([phi] if phi is not None else []) + list(shared.values()) + leaves
        with torch.enable_grad():
            loss = vpg_loss(policy, inputs, train, train_adv, phi).sum()
            if first_order:
                g_all = []
                g = list(torch.autograd.grad(loss, leaves))
            else:
                g_all = list(torch.autograd.grad(loss, z, create_graph=True, allow_unused=True))
                g = g_all[len(z) - len(leaves):]
        inner.append((z, leaves, g_all, g))
        fast = OrderedDict((k, fast[k].detach() - lrs[k] * gk.detach()) for k, gk in zip(names, g))
    adapted = OrderedDict(meta)
    adapted.update(fast)
    # -- the Fisher at the adapted parameters, valid observations ----------------
    valid_lin = MLPLinearization(policy, valid.flat_obs(), adapted, policy.layer_names())
    w = _kl_weights(valid.mask).unsqueeze(-1)  # (N, M, 1)
    log_std = adapted["log_std"]
    precision = w * torch.exp(-2 * (log_std.unsqueeze(-2) if log_std.dim() == 2 else log_std))
    ls_weight = 2 * w.sum(1)  # (N, 1)
    if log_std.dim() == 1:
        ls_weight = ls_weight.sum()
    n_shared = (1 if phi is not None else 0) + len(shared)

    def hess(step: int, d: list[Tensor | None], adapted_only: bool) -> list[Tensor]:
        """``H d`` of step ``step``'s inner loss (rows of z, or only the adapted rows)."""
        if full_form:
            hd = mlp_steps[step].hvp(dict(zip(names, d)))  # type: ignore[arg-type]
            return [hd[k] for k in names]
        if closed_form:
            hs = head_steps[step]
            return hs.forward(d[0], d[1], d[2], d[3]) if adapted_only else hs.backward(d[0], d[1])  # type: ignore
        z, leaves, g_all, g = inner[step]
        pairs = [(t, x) for t, x in zip(g_all if adapted_only else g, d) if t is not None and x is not None]
        targets = leaves if adapted_only else z
        res = torch.autograd.grad([t for t, _ in pairs], targets, [x for _, x in pairs], retain_graph=True,
                                  allow_unused=True)
        return [torch.zeros_like(t) if r is None else r for t, r in zip(targets, res)]

    def product(v: Tensor) -> Tensor:
        vd = unflatten(v, layout)
        # forward: J v
        phi_dot = train_lin.jvp(vd) if (train_lin is not None and not first_order) else None
        tan = OrderedDict((k, vd[k]) for k in meta)
        t_fast = OrderedDict((k, vd[k].unsqueeze(0).expand(n, *vd[k].shape)) for k in names)
        for i in range(steps):
            _, _, _, g = inner[i]
            if not first_order:
                d = ([phi_dot] if phi is not None else []) + [vd[k] for k in shared] + list(t_fast.values())
                hd = hess(i, d, adapted_only=True)
            new = OrderedDict()
            for j, k in enumerate(names):
                u = t_fast[k]
                if not first_order:
                    u = u - lrs[k] * hd[j]
                if meta_sgd:
                    u = u - vd[f"lr/{k}"] * g[j].detach()
                new[k] = u
            t_fast = new
        tan.update(t_fast)
        # Fisher
        cot_mean, _ = valid_lin.vjp(precision * valid_lin.jvp(tan))
        cot = OrderedDict((k, cot_mean[k]) for k in meta if k != "log_std")
        cot["log_std"] = ls_weight * tan["log_std"]
        # backward: Jᵀ
        cot_fast = OrderedDict((k, cot[k]) for k in names)
        cot_shared = OrderedDict((k, cot[k]) for k in fixed)
        cot_lr = OrderedDict((k, torch.zeros_like(lrs[k]) if meta_sgd else None) for k in names)
        cot_phi: Tensor | None = None
        for i in reversed(range(steps)):
            _, _, _, g = inner[i]
            if meta_sgd:
                for j, k in enumerate(names):
                    cot_lr[k] = cot_lr[k] - (g[j].detach() * cot_fast[k]).sum(0)
            if first_order:
                continue
            hd = hess(i, [lrs[k] * cot_fast[k] for k in names], adapted_only=False)
            if phi is not None:
                cot_phi = -hd[0] if cot_phi is None else cot_phi - hd[0]
            for j, k in enumerate(shared):
                cot_shared[k] = cot_shared[k] - hd[(1 if phi is not None else 0) + j]
            cot_fast = OrderedDict((k, cot_fast[k] - hd[n_shared + j]) for j, k in enumerate(names))
        if cot_phi is not None:
            assert train_lin is not None
            body_cot, _ = train_lin.vjp(cot_phi)
            for k, c in body_cot.items():
                cot_shared[k] = cot_shared[k] + c
        parts = [cot_fast[k].sum(0) if k in cot_fast else cot_shared[k] for k in meta]
        if meta_sgd:
            parts += [cot_lr[k] for k in names]
        return torch.cat([p.reshape(-1) for p in parts])

    return product


def _one_intra_op_thread(threads: int, fn: Callable[[], list]) -> list:
    """Run ``fn`` (which starts ``threads`` worker threads) with one intra-op thread each."""
    if threads <= 1:
        return fn()
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # threads started from here on get one intra-op thread
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def map_chunks(fn: Callable[[int, int], T], ranges: Sequence[tuple[int, int]], threads: int) -> list[T]:
    """``[fn(a, b) for (a, b) in ranges]``, in ``threads`` Python threads when > 1 (results in order)."""
    if threads <= 1 or len(ranges) <= 1:
        return [fn(a, b) for a, b in ranges]

    def run() -> list[T]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda r: fn(*r), ranges))

    return _one_intra_op_thread(threads, run)


def weighted_sum(parts: Sequence[tuple[float, Callable[[Tensor], Tensor]]], threads: int,
                 damping: float) -> Callable[[Tensor], Tensor]:
    """``v -> Σ_i w_i h_i(v) + damping v`` for per-chunk products ``(w_i, h_i)``.

    With ``threads > 1`` the chunks' products run in that many Python threads
    (each with one intra-op thread; the kernels and the autograd engine
    release the GIL), because per-task matrices are too small for intra-op
    threading to pay.  The terms are summed in chunk order either way.
    """
    def product(v: Tensor) -> Tensor:
        terms = map_chunks(lambda i, _: parts[i][0] * parts[i][1](v), [(i, i + 1) for i in range(len(parts))],
                           threads)
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total + damping * v

    return product
