"""The Ghost module family: the module, GhostNet, ghostified backbones and the paper's theory.

Importing the package registers GhostNet and the Ghost backbones as models.
"""

from ghost import backbones
from ghost.ghostify import GhostifyReport, ghostify
from ghost.ghostnet import GhostBottleneck, GhostNet
from ghost.module import GhostModule
from ghost.theory import approximate_ratio, compression_ratio, speedup_ratio

__all__ = [
    "GhostBottleneck",
    "GhostModule",
    "GhostNet",
    "GhostifyReport",
    "approximate_ratio",
    "backbones",
    "compression_ratio",
    "ghostify",
    "speedup_ratio",
]
