"""How far a top-1 can be trusted: its interval over the test images, and paired tests.

A top-1 measured on N test images is a binomial proportion: its 95% interval (Wilson's)
is about +-0.5 points at N = 10,000 and +-2 points at N = 2,000. Two networks tested on
the same images are compared image by image (McNemar's exact test on the images that
one gets right and the other wrong), which sees much smaller gaps than two intervals do.
Each run records which test images its delivered network got right (``test_correct``,
packed bits) so any two runs can be compared this way later.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

LEVEL = 0.95
ENCODING = "packbits-base64"  # np.packbits (big-endian bit order), then base64


def encode_answers(correct: torch.Tensor) -> dict[str, Any]:
    """Per-image correctness (bool, test-split order) as a short JSON-able record."""
    bits = np.packbits(correct.cpu().numpy().astype(bool))
    return {
        "encoding": ENCODING,
        "images": int(correct.numel()),
        "bits": base64.b64encode(bits.tobytes()).decode("ascii"),
    }


def decode_answers(record: Mapping[str, Any]) -> np.ndarray:
    """The bool array ``encode_answers`` recorded; ValueError for anything else."""
    if not isinstance(record, Mapping) or record.get("encoding") != ENCODING:
        raise ValueError("not a per-image record of this format")
    images = record.get("images")
    if not isinstance(images, int) or images < 0:
        raise ValueError("per-image record without its image count")
    try:
        packed = np.frombuffer(base64.b64decode(record["bits"], validate=True), dtype=np.uint8)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"per-image record unreadable: {error}") from None
    if len(packed) != -(-images // 8):
        raise ValueError("per-image record holds the wrong number of bits")
    return np.unpackbits(packed, count=images).astype(bool)


@dataclass(frozen=True)
class Interval:
    """A top-1 with its two-sided ``LEVEL`` interval (Wilson score), all in [0, 1]."""

    correct: int
    images: int
    low: float
    high: float

    @property
    def top1(self) -> float:
        return self.correct / self.images

    def text(self) -> str:
        """``91.73% [91.17, 92.25]``."""
        return f"{100 * self.top1:.2f}% [{100 * self.low:.2f}, {100 * self.high:.2f}]"


def interval(correct: int, images: int) -> Interval:
    """The Wilson score interval of ``correct`` right answers out of ``images``."""
    from scipy.stats import binomtest  # a second's import, for the commands that test

    bounds = binomtest(correct, images).proportion_ci(LEVEL, method="wilson")
    return Interval(correct, images, float(bounds.low), float(bounds.high))


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test of two networks on the same test images."""

    only_first: int  # images the first gets right and the second wrong
    only_second: int
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 1 - LEVEL


def mcnemar(first: np.ndarray, second: np.ndarray) -> PairedTest:
    """McNemar's exact (binomial) test on two per-image correctness arrays of the same
    test images: under "equally accurate", each disagreement goes either way at 1/2."""
    if first.shape != second.shape:
        raise ValueError(
            f"paired test needs the same test images: {first.size} against {second.size}"
        )
    from scipy.stats import binomtest

    only_first = int(np.count_nonzero(first & ~second))
    only_second = int(np.count_nonzero(second & ~first))
    disagreements = only_first + only_second
    p_value = binomtest(only_first, disagreements).pvalue if disagreements else 1.0
    return PairedTest(only_first, only_second, float(p_value))


def paired_change(reference: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """``other``'s top-1 against ``reference``'s (two runs' metrics) on the same test
    images: ``+1.20 points (p = 0.003)``, or n/a where either did not record its answers
    or they saw different images."""
    if reference.get("dataset") != other.get("dataset"):
        return "n/a"
    try:
        mine = decode_answers(reference["test_correct"])
        theirs = decode_answers(other["test_correct"])
        test = mcnemar(theirs, mine)
    except (KeyError, ValueError):
        return "n/a"
    change = 100 * (theirs.mean() - mine.mean())
    return f"{change:+.2f} points (p = {test.p_value:.2g})"
