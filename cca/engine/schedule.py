"""Poly learning-rate schedule with optional linear warm-up, as a ``torch.optim.lr_scheduler.LambdaLR``.

LR of step ``it`` (0-based, before ``scheduler.step()``) for a group with base LR ``lr0``::

    lr0 * (1 - it / total) ** power                                    it >= warmup
    lr0 * (1 - it / total) ** power * (ratio + (1 - ratio) * it / warmup)  it <  warmup
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


class PolyWithWarmup:
    """The LR factor of step ``it`` (a picklable callable, so ``LambdaLR.state_dict`` keeps it)."""

    def __init__(self, total: int, power: float = 0.9, warmup: int = 0, warmup_ratio: float = 0.1) -> None:
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total}")
        if warmup < 0 or warmup > total:
            raise ValueError(f"warmup must be in [0, total={total}], got {warmup}")
        if not 0.0 < warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must be in (0, 1], got {warmup_ratio}")
        self.total = total
        self.power = power
        self.warmup = warmup
        self.warmup_ratio = warmup_ratio

    def __call__(self, it: int) -> float:
        it = min(it, self.total)
        factor = (1.0 - it / self.total) ** self.power
        if it < self.warmup:
            factor *= self.warmup_ratio + (1.0 - self.warmup_ratio) * it / self.warmup
        return factor


def poly_scheduler(
    optimizer: torch.optim.Optimizer, total: int, power: float = 0.9, warmup: int = 0, warmup_ratio: float = 0.1
) -> LambdaLR:
    """A ``LambdaLR`` applying :class:`PolyWithWarmup` to every parameter group."""
    return LambdaLR(optimizer, PolyWithWarmup(total, power, warmup, warmup_ratio))
