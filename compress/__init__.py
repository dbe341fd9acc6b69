"""compress: which CNN compression technique buys the most accuracy per FLOP, param and ms."""

from compress.measure import ModelProfile, profile_model
from compress.registry import create_model, list_models, register_model
from compress.runner import run

__all__ = ["ModelProfile", "create_model", "list_models", "profile_model", "register_model", "run"]
