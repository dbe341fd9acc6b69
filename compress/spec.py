"""What a run is: its techniques with their options, its data and its training recipe.

A ``RunSpec`` is built from a command line's (or ``compress.run``'s) flat options, or
read back from a run's ``config.json``; ``record`` is what that file stores.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from compress.data import DataConfig
from compress.engine import TrainConfig
from compress.errors import UsageError
from compress.options import Options, from_values
from compress.techniques import Technique, get_technique, parse_composition

# Protocols by name; explicit options override them.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The seed experiment: GhostNet vs MobileNetV3-Large on CIFAR-10.
    "seed": {
        "data": {"dataset": "cifar10"},
        "train": {
            "optimizer": "adam",
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "batch_size": 128,
            "epochs": 30,
            "schedule": "constant",
        },
    },
    # The paper's CIFAR recipe (Section 4.1, after He et al.).
    "paper": {
        "data": {"dataset": "cifar10"},
        "train": {
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "batch_size": 128,
            "epochs": 164,
            "schedule": "multistep",
            "milestones": "0.5,0.75",
            "gamma": 0.1,
        },
    },
    # The paper's Table 7 rows as timm's pretrained weights: ImageNet's validation images
    # (a folder, --data-dir), at 224 px, evaluated as published (no training step, no BN
    # statistics recomputed); --normalize timm:NAME brings that model's mean, std, crop
    # share and resampling (docs/imagenet.md).
    "imagenet-eval": {
        "data": {"dataset": "folder", "image_size": 224},
        "train": {"epochs": 0, "precise_bn": 0},
    },
}


@dataclass
class TechniqueUse:
    """One technique of a run, with its options."""

    name: str
    options: Options

    @property
    def technique(self) -> Technique:
        return get_technique(self.name)


@dataclass
class RunSpec:
    """What to run: techniques in stage order with their options, the data, the recipe."""

    uses: list[TechniqueUse]
    data: DataConfig
    train: TrainConfig

    @property
    def name(self) -> str:
        return "+".join(use.name for use in self.uses)

    @property
    def label(self) -> str:
        builder, *others = self.uses
        return "+".join([builder.technique.label(builder.options), *(u.name for u in others)])

    @property
    def reference_model(self) -> str | None:
        """The uncompressed model to read this run against (none for that model itself)."""
        builder = self.uses[0]
        reference = builder.technique.reference_model(builder.options)
        return None if self.record()["techniques"] == baseline_record(reference) else reference

    def record(self) -> dict[str, Any]:
        return {
            "techniques": [{"name": u.name, "options": u.options.to_record()} for u in self.uses],
            "data": self.data.to_record(),
            "train": self.train.to_record(),
        }

    @classmethod
    def from_options(
        cls, composition: str, options: dict[str, Any], preset: str | None = None
    ) -> RunSpec:
        """A run from technique names joined by '+' and a flat dict of options, each
        going to the config that declares it: defaults, then the preset, then these."""
        names = parse_composition(composition)
        configs = [get_technique(name).config_cls for name in names]
        declared = {f.name for c in [*configs, DataConfig, TrainConfig] for f in fields(c)}
        unknown = sorted(set(options) - declared)
        if unknown:
            raise UsageError(f"{composition} takes no option {unknown[0]!r}")
        if preset is not None and preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
        layers = PRESETS.get(preset, {})
        spec = cls(
            [TechniqueUse(n, from_values(c, options)) for n, c in zip(names, configs, strict=True)],
            from_values(DataConfig, layers.get("data", {}), options),
            from_values(TrainConfig, layers.get("train", {}), options),
        )
        spec.check_composition()
        return spec

    @property
    def trains_like_its_backbone(self) -> bool:
        """Whether training is the builder's network trained alone: every other technique
        acts only afterwards (pruning, post-training quantization). Then the trained
        backbone can be shared (``trained_once``) and only the rest run per result."""
        return not any(use.technique.changes_training(use.options) for use in self.uses[1:])

    def backbone(self) -> RunSpec:
        """The builder alone, with the same data and recipe."""
        return RunSpec(self.uses[:1], self.data, self.train)

    def check_composition(self) -> None:
        """Each technique's word on the others of the run (e.g. quantize after prune)."""
        for use in self.uses:
            others = [other.technique for other in self.uses if other is not use]
            use.technique.check_composition(use.options, others)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RunSpec:
        try:
            uses = [
                TechniqueUse(e["name"], get_technique(e["name"]).config_cls(**e["options"]))
                for e in record["techniques"]
            ]
            spec = cls(uses, DataConfig(**record["data"]), TrainConfig(**record["train"]))
        except (KeyError, TypeError, ValueError) as error:
            raise UsageError(f"config.json does not describe a run: {error}") from None
        names = [use.name for use in uses]
        if not uses or parse_composition("+".join(names)) != names:
            raise UsageError(
                f"config.json does not describe a run: techniques {names} are not one "
                "builder followed by others in stage order"
            )
        return spec


def baseline_record(model: str | None) -> list[dict[str, Any]]:
    """The technique record of ``model`` trained as it is."""
    return [{"name": "baseline", "options": {"model": model}}]
