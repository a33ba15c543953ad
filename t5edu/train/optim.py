"""Optimizers for T5: AdamW with per-matrix RMS step scaling (nanoT5) and Adafactor (T5's own).

Chapter 11 teaches both. `build_optimizer` is the one entry point the trainer and the CLI use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZERS = ("adamw_scale", "adamw", "adafactor")


def _rms(p: torch.Tensor) -> torch.Tensor:
    """Root mean square of a whole parameter, gathered first when FSDP2 shards it (a DTensor)."""
    norm = torch.linalg.vector_norm(p.detach().float())
    if hasattr(norm, "full_tensor"):  # a DTensor: the local shard's norm is only a partial sum
        norm = norm.full_tensor()
    return norm / math.sqrt(p.numel())


def _check_non_negative(optimizer: str, **values: float) -> None:
    """ValueError naming the optimizer and the first argument that is negative."""
    for name, value in values.items():
        if value < 0.0:
            raise ValueError(f"{optimizer}: {name} must be >= 0; got {value}")


class AdamWScale(torch.optim.Optimizer):
    """AdamW whose step for each tensor is multiplied by that tensor's RMS (the nanoT5 recipe).

    Update for a parameter `p` (any shape) with gradient `g`, at step t (1-based):

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        p <- p (1 - lr wd)
        p <- p - lr * max(min_scale, RMS(p)) * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    The factor `max(min_scale, RMS(p))` is Adafactor's "relative step size" (Shazeer & Stern 2018,
    section 8) grafted onto Adam: a matrix whose entries are O(1) moves O(lr) per step, one whose
    entries are O(0.01) moves 100x less, so one learning rate suits embeddings and projections
    alike. Nawrot's nanoT5 (github.com/PiotrNawrot/nanoT5, `AdamWScale` in
    `nanoT5/utils/copied_utils.py`, a modified HF AdamW) found that this lets AdamW train T5 with a
    large lr (2e-2, cosine schedule) as well as Adafactor does. RMS is measured before the step,
    with `min_scale = 1e-3` as in nanoT5. Differences from nanoT5, both deliberate: eps is added
    after bias correction and the decoupled decay comes before the step, as in
    `torch.optim.AdamW`, so that with `scale_by_rms=False` this is exactly torch's AdamW (tested).
    eps defaults to nanoT5's 1e-6.
    The decay uses the group lr, not the RMS-scaled one, as in nanoT5.

    State per parameter: `step`, `exp_avg`, `exp_avg_sq` (float32 for float32 parameters), the
    same names as torch's AdamW.

    Raises:
        ValueError: for a negative `lr`, `eps`, `weight_decay` or `min_scale`, or betas outside
            [0, 1).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float = 2e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        scale_by_rms: bool = True,
        min_scale: float = 1e-3,
    ):
        _check_non_negative(
            "AdamWScale", lr=lr, eps=eps, weight_decay=weight_decay, min_scale=min_scale
        )
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamWScale: betas must lie in [0, 1); got {betas}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            scale_by_rms=scale_by_rms,
            min_scale=min_scale,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns `closure()` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"].item()
                lr = group["lr"]
                # Measured before this step changes p, so the scale is the tensor's current size.
                scale = max(group["min_scale"], _rms(p).item()) if group["scale_by_rms"] else 1.0
                p.mul_(1.0 - lr * group["weight_decay"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(p.grad, 1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                bias1, bias2 = 1.0 - beta1**t, 1.0 - beta2**t
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(group["eps"])
                p.addcdiv_(exp_avg, denom, value=-lr * scale / bias1)
        return loss


class Adafactor(torch.optim.Optimizer):
    """Adafactor as T5 was trained with it (Shazeer & Stern 2018; Raffel et al. 2020).

    For a parameter `W` with gradient `g` at step t (1-based), with `G = g^2 + eps1`:

        beta2_t = 1 - t^(-decay_rate)
        matrix (ndim >= 2, factored over the last two dims):
            R <- beta2_t R + (1 - beta2_t) mean_cols(G)     (one number per row)
            C <- beta2_t C + (1 - beta2_t) mean_rows(G)     (one number per column)
            u = g / sqrt(R C^T / mean(R))          (the rank-1 estimate of E[g^2])
        vector: V <- beta2_t V + (1 - beta2_t) G;  u = g / sqrt(V)
        u <- u / max(1, RMS(u) / clip_threshold)               (update clipping)
        alpha = rho_t * max(eps2, RMS(W))    with rho_t = min(lr, 1/sqrt(t)) (relative_step)
        W <- W (1 - weight_decay alpha) - alpha u              (or a momentum of alpha u)

    State per matrix: r + c numbers instead of Adam's 2rc; no first moment unless `beta1`.
    With the defaults (lr 1e-2, decay 0.8, eps 1e-30 / 1e-3, clipping 1, parameter scaling)
    `rho_t` is T5's inverse-square-root schedule with 10^4 warm-up steps, and the optimizer
    equals `transformers.optimization.Adafactor(lr=None, scale_parameter=True,
    relative_step=True)` step for step (tests/test_train.py); `relative_step=False` uses
    `rho_t = lr` (an external schedule), like HF's with the same flag.

    Why not `torch.optim.Adafactor`: it implements the same algorithm but clamps the
    second-moment estimate at (float32 eps)^2 instead of adding eps1 = 1e-30 to g^2. For
    entries with tiny gradients (the rows of an untied output head for tokens a batch never
    predicts) that shrinks the normalised update by orders of magnitude, and the update
    clipping then rescales everything else: chapter 11 shows the two drifting apart.

    Raises:
        ValueError: for a negative `lr`, `eps1`, `eps2`, `weight_decay`, a non-positive
            `clip_threshold`, `decay_rate` outside (0, 1], or `beta1` outside [0, 1).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        relative_step: bool = True,
        beta1: float | None = None,
        decay_rate: float = 0.8,
        eps1: float = 1e-30,
        eps2: float = 1e-3,
        clip_threshold: float = 1.0,
        scale_parameter: bool = True,
        weight_decay: float = 0.0,
    ):
        _check_non_negative("Adafactor", lr=lr, eps1=eps1, eps2=eps2, weight_decay=weight_decay)
        if clip_threshold <= 0 or not 0 < decay_rate <= 1:
            raise ValueError(
                "Adafactor: clip_threshold must be > 0 and decay_rate in (0, 1]; got "
                f"clip_threshold={clip_threshold}, decay_rate={decay_rate}"
            )
        if beta1 is not None and not 0.0 <= beta1 < 1.0:
            raise ValueError(f"Adafactor: beta1 must be None or in [0, 1); got {beta1}")
        defaults = dict(
            lr=lr,
            relative_step=relative_step,
            beta1=beta1,
            decay_rate=decay_rate,
            eps1=eps1,
            eps2=eps2,
            clip_threshold=clip_threshold,
            scale_parameter=scale_parameter,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns `closure()` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        g = p.grad.float()  # statistics in float32 whatever the parameter's dtype
        state = self.state[p]
        factored = g.ndim >= 2
        if not state:
            state["step"] = torch.tensor(0.0)
            if factored:
                state["exp_avg_sq_row"] = torch.zeros_like(g[..., 0])  # (..., r)
                state["exp_avg_sq_col"] = torch.zeros_like(g[..., 0, :])  # (..., c)
            else:
                state["exp_avg_sq"] = torch.zeros_like(g)
            if group["beta1"] is not None:
                state["exp_avg"] = torch.zeros_like(g)
        state["step"] += 1
        t = state["step"].item()
        rho = min(group["lr"], t**-0.5) if group["relative_step"] else group["lr"]
        # The parameter's scale is read before this step changes it (as in HF and T5).
        alpha = rho * max(group["eps2"], _rms(p).item()) if group["scale_parameter"] else rho
        keep = 1.0 - t ** -group["decay_rate"]  # beta2_t: 0 at t = 1, then towards 1
        g2 = g * g + group["eps1"]
        if factored:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row.mul_(keep).add_(g2.mean(dim=-1), alpha=1.0 - keep)
            col.mul_(keep).add_(g2.mean(dim=-2), alpha=1.0 - keep)
            row_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt()  # (..., r)
            u = row_factor.unsqueeze(-1) * col.rsqrt().unsqueeze(-2) * g  # (..., r, c)
        else:
            sq = state["exp_avg_sq"]
            sq.mul_(keep).add_(g2, alpha=1.0 - keep)
            u = g * sq.rsqrt()
        u = u / (_rms(u) / group["clip_threshold"]).clamp(min=1.0)
        u = u * alpha
        if group["beta1"] is not None:
            u = state["exp_avg"].mul_(group["beta1"]).add_(u, alpha=1.0 - group["beta1"])
        if group["weight_decay"]:
            p.mul_(1.0 - group["weight_decay"] * alpha)
        p.sub_(u.to(p.dtype))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (decayed) and vectors such as norm scales and biases (never decayed).

    Decay pulls weights towards 0; applied to an RMSNorm scale it would pull the layer's output
    towards 0 too, which is why every T5 recipe exempts 1-D parameters.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in params if p.ndim >= 2]
    vectors = [p for p in params if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": weight_decay}]
    if vectors:
        groups.append({"params": vectors, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "adamw_scale",
    lr: float = 2e-2,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """The optimizer named `name` over `model`'s trainable parameters.

    - `"adamw_scale"`: `AdamWScale`, the nanoT5 recipe (lr about 2e-2 with a cosine schedule).
    - `"adamw"`: `torch.optim.AdamW` (lr about 1e-3; no RMS scaling).
    - `"adafactor"`: `Adafactor` with T5's settings (factored second moments, no first moment,
      update clipping, parameter scaling, step size `min(lr, 1/sqrt(t))`): with lr = 1e-2 and
      a constant schedule this is T5's own optimizer and schedule.

    Raises:
        ValueError: if `name` is not one of `OPTIMIZERS`, or for a negative `lr`/`weight_decay`.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}; got {name!r}")
    if lr < 0 or weight_decay < 0:
        raise ValueError(
            f"lr and weight_decay must be >= 0; got lr={lr}, weight_decay={weight_decay}"
        )
    groups = param_groups(model, weight_decay)
    if name == "adamw_scale":
        return AdamWScale(groups, lr=lr, betas=betas)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    return Adafactor(groups, lr=lr)
