"""The optimiser and the weights' exponential moving average, shared by every trainer (image, latent, bench)."""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused where the device supports it."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)


class EMA:
    """Exponential moving average of the weights, updated in place with one fused lerp."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool, updates: int = 0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, updates

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_p = [p for p in self.model.parameters()]
        src = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, src, 1.0 - d)
        self.updates += 1
