"""compress: which CNN compression technique buys the most accuracy per FLOP, param and ms."""

from compress.loading import load
from compress.measure import ModelProfile, profile_model
from compress.registry import create_model, list_models, register_model
from compress.runner import run

__all__ = [
    "ModelProfile",
    "create_model",
    "list_models",
    "load",
    "profile_model",
    "register_model",
    "run",
]
