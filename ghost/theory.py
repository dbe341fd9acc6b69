"""The paper's cost analysis (Section 3.1): what replacing a conv by a Ghost module saves.

Replacing a conv of ``c`` inputs, ``n`` outputs and a ``k x k`` kernel with a Ghost module
of ratio ``s`` and cheap kernel ``d`` divides MACs by r_s (Eq. 4) and parameters by
r_c (Eq. 5). Both reduce to the same expression,
``c k^2 / (c k^2 / s + (s - 1) d^2 / s)``, which approaches ``s`` for ``d ~ k`` and ``s << c``.
``compress.ratios`` puts these beside the ratios PyTorch's FLOP counter measures.
"""

from __future__ import annotations

from ghost.module import check_ghost_options


def speedup_ratio(c: int, k: int, s: int, d: int) -> float:
    """r_s of Eq. 4: conv MACs over Ghost-module MACs (spatial size and n cancel out)."""
    check_ghost_options(s, d)
    return c * k * k / (c * k * k / s + (s - 1) * d * d / s)


def compression_ratio(c: int, k: int, s: int, d: int) -> float:
    """r_c of Eq. 5: conv weights over Ghost-module weights; equal to r_s by construction."""
    return speedup_ratio(c, k, s, d)


def approximate_ratio(c: int, s: int) -> float:
    """The paper's closed form s c / (s + c - 1), valid when d is close to k."""
    return s * c / (s + c - 1)
