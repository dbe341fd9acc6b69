"""The Ghost module family: the module, GhostNet, ghostified backbones and the paper's theory."""

from ghost.ghostify import GhostifyReport, ghostify
from ghost.ghostnet import GhostBottleneck, GhostNet
from ghost.module import GhostModule
from ghost.theory import compression_ratio, layer_ratios, speedup_ratio

__all__ = [
    "GhostBottleneck",
    "GhostModule",
    "GhostNet",
    "GhostifyReport",
    "compression_ratio",
    "ghostify",
    "layer_ratios",
    "speedup_ratio",
]
