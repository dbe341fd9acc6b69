"""Turn any CNN into its Ghost version, as the paper built Ghost-VGG-16 and Ghost-ResNet-56.

Every conv that is followed by BatchNorm (and maybe ReLU) becomes a ``GhostModule``
whose primary conv keeps the original kernel size and stride; the module's own BN
replaces the original one. A ReLU after it is absorbed into the module (so the cheap
operation sees activated maps, as in the authors' code) and left in place, where it
is a no-op, because networks often reuse one ReLU module in several places.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ghost.module import GhostModule, check_ghost_options


@dataclass(frozen=True)
class GhostifiedLayer:
    """One conv that became a Ghost module, with what the theory needs to judge it."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    relu: bool


@dataclass
class GhostifyReport:
    """Which convs were replaced, and which were kept and why."""

    s: int
    d: int
    changed: list[GhostifiedLayer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _skip_reason(conv: nn.Conv2d, follower: nn.Module | None) -> str | None:
    if type(conv) is not nn.Conv2d:
        return f"custom conv class {type(conv).__name__}"
    if conv.groups > 1:
        return "grouped or depthwise conv, already cheap"
    kernel, stride = conv.kernel_size, conv.stride
    if kernel[0] != kernel[1] or stride[0] != stride[1]:
        return "non-square kernel or stride"
    if conv.padding != (kernel[0] // 2,) * 2 or conv.dilation != (1, 1):
        return "padding or dilation other than the Ghost module's k//2"
    if conv.padding_mode != "zeros":
        return f"padding mode {conv.padding_mode!r}"
    if not isinstance(follower, nn.BatchNorm2d) or follower.num_features != conv.out_channels:
        return "no BatchNorm follows it"
    return None


def _is_relu(module: nn.Module | None) -> bool:
    return type(module) is nn.ReLU


def ghostify(model: nn.Module, s: int = 2, d: int = 3, keep_first: bool = True) -> GhostifyReport:
    """Replace, in place, every conv + BN (+ ReLU) unit of ``model`` with a Ghost module.

    ``keep_first`` leaves the stem conv plain, as the paper's authors did. Convs inside
    existing Ghost modules are left alone. Returns what changed and what was skipped.
    """
    check_ghost_options(s, d)
    report = GhostifyReport(s, d)
    modules = list(model.named_modules())
    first_conv = next((name for name, m in modules if isinstance(m, nn.Conv2d)), None)
    ghost_prefixes = tuple(f"{name}." for name, m in modules if isinstance(m, GhostModule))
    for parent_name, parent in modules:
        if f"{parent_name}.".startswith(ghost_prefixes) or isinstance(parent, GhostModule):
            continue
        children = list(parent.named_children())
        for index, (child_name, conv) in enumerate(children):
            if not isinstance(conv, nn.Conv2d):
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            follower = children[index + 1][1] if index + 1 < len(children) else None
            after = children[index + 2][1] if index + 2 < len(children) else None
            if keep_first and name == first_conv:
                report.skipped[name] = "first conv kept plain (keep_first)"
                continue
            reason = _skip_reason(conv, follower)
            if reason:
                report.skipped[name] = reason
                continue
            # timm fuses the activation into its norm layer (BatchNormAct2d.act).
            fused_act = getattr(follower, "act", None)
            relu = _is_relu(after) or _is_relu(fused_act)
            ghost = GhostModule(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size[0],
                s,
                d,
                conv.stride[0],
                relu,
            ).to(device=conv.weight.device, dtype=conv.weight.dtype)
            setattr(parent, child_name, ghost)
            bn_name = children[index + 1][0]
            setattr(
                parent, bn_name, fused_act if isinstance(fused_act, nn.Module) else nn.Identity()
            )
            report.changed.append(
                GhostifiedLayer(
                    name,
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size[0],
                    conv.stride[0],
                    relu,
                )
            )
    return report
