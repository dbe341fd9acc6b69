"""compress: which CNN compression technique buys the most accuracy per FLOP, param and ms.

The Python API: ``create_model`` and ``register_model`` (the model registry),
``run`` (train with techniques, as ``compress run`` does), ``load`` (a finished run's
network), ``profile_model`` (exact counts and latency), and ``Technique`` with
``register_technique`` for techniques of your own.
"""

from compress.loading import RunLoadError, load
from compress.measure import ModelProfile, profile_model
from compress.registry import create_model, list_models, register_model
from compress.runner import run
from compress.techniques import RunContext, Technique, TrainingTerm, register_technique

__all__ = [
    "ModelProfile",
    "RunContext",
    "RunLoadError",
    "Technique",
    "TrainingTerm",
    "create_model",
    "list_models",
    "load",
    "profile_model",
    "register_model",
    "register_technique",
    "run",
]
