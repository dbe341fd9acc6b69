"""The model zoo every comparison uses: CIFAR VGG/ResNets and torchvision mobile nets.

Importing the package registers its models (``baselines.registry.MODELS``).
"""

from baselines import cifar, torchvision
from baselines.registry import MODELS, ModelEntry, register_model

__all__ = ["MODELS", "ModelEntry", "cifar", "register_model", "torchvision"]
