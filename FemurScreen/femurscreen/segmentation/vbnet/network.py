"""VB-Net: a V-Net whose residual units are bottlenecks, so a 3D model stays small on CPU.

Layout (base channels ``b``, 16 in the published network):
input block 3x3x3 conv -> norm -> ReLU (b channels); four down blocks, each a 2x2x2 stride-2
conv that doubles the channels (2b, 4b, 8b, 16b) followed by 1, 2, 3, 3 bottleneck units; four
up blocks, each a 2x2x2 transposed conv to half the target channels, concatenated with the skip
of the same resolution, followed by 3, 3, 2, 1 bottleneck units; a 1x1x1 output conv.

``forward`` returns logits; apply softmax over dim 1 at inference (``VBNet.probabilities``).
Hyper-parameters live in the constructor (MONAI style) so that the manifest can rebuild the
exact network from ``VBNet.config()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

DIVISOR = 16  # four stride-2 levels: every spatial size must divide by 2**4


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    """GroupNorm by default: batch statistics of 1-2 crops (CPU training) are too noisy for BN."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "group":
        # the largest divisor of `channels` not above `groups`, so any width works
        g = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
        return nn.GroupNorm(g, channels)
    raise ValueError(f"norm must be 'group', 'instance' or 'batch', got {kind!r}")


class ConvNormReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, norm: str, groups: int) -> None:
        super().__init__(
            nn.Conv3d(cin, cout, kernel, padding=kernel // 2, bias=False),
            _norm(norm, cout, groups),
            nn.ReLU(inplace=True),
        )


class Bottleneck(nn.Module):
    """1x1x1 reduce (ratio x) -> 3x3x3 -> 1x1x1 restore, added to the input, then ReLU."""

    def __init__(self, channels: int, ratio: int, norm: str, groups: int) -> None:
        super().__init__()
        mid = max(1, channels // ratio)
        self.body = nn.Sequential(
            ConvNormReLU(channels, mid, 1, norm, groups),
            ConvNormReLU(mid, mid, 3, norm, groups),
            nn.Conv3d(mid, channels, 1, bias=False),
            _norm(norm, channels, groups),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class DownBlock(nn.Module):
    def __init__(self, cin: int, units: int, ratio: int, norm: str, groups: int) -> None:
        super().__init__()
        cout = 2 * cin
        self.down = nn.Sequential(
            nn.Conv3d(cin, cout, 2, stride=2, bias=False),
            _norm(norm, cout, groups),
            nn.ReLU(inplace=True),
        )
        self.units = nn.Sequential(*(Bottleneck(cout, ratio, norm, groups) for _ in range(units)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(self.down(x))


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, units: int, ratio: int, norm: str, groups: int):
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose3d(cin, cout // 2, 2, stride=2, bias=False),
            _norm(norm, cout // 2, groups),
            nn.ReLU(inplace=True),
        )
        self.units = nn.Sequential(*(Bottleneck(cout, ratio, norm, groups) for _ in range(units)))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.units(torch.cat((self.up(x), skip), dim=1))


class VBNet(nn.Module):
    """VB-Net for 3D segmentation; see the module docstring for the layout."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        base_channels: int = 16,
        down_units: Sequence[int] = (1, 2, 3, 3),
        up_units: Sequence[int] = (3, 3, 2, 1),
        bottleneck_ratio: int = 4,
        norm: str = "group",
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if len(down_units) != 4 or len(up_units) != 4:
            raise ValueError("VB-Net has four down and four up blocks")
        self._config = {
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "base_channels": int(base_channels),
            "down_units": [int(u) for u in down_units],
            "up_units": [int(u) for u in up_units],
            "bottleneck_ratio": int(bottleneck_ratio),
            "norm": str(norm),
            "norm_groups": int(norm_groups),
        }
        b, r, g = base_channels, bottleneck_ratio, norm_groups
        self.input_block = ConvNormReLU(in_channels, b, 3, norm, g)
        self.down = nn.ModuleList(DownBlock(b * 2**i, down_units[i], r, norm, g) for i in range(4))
        # up block i takes 16b, 16b, 8b, 4b channels and returns 16b, 8b, 4b, 2b
        ins = [16 * b, 16 * b, 8 * b, 4 * b]
        outs = [16 * b, 8 * b, 4 * b, 2 * b]
        self.up = nn.ModuleList(UpBlock(ins[i], outs[i], up_units[i], r, norm, g) for i in range(4))
        self.output_block = nn.Conv3d(2 * b, out_channels, 1)

    def config(self) -> dict:
        """Constructor arguments that rebuild this network (stored in the weights manifest)."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x.shape[2:])
        skips = [self.input_block(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.up:
            out = block(out, skips.pop())
        return self.output_block(out)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over classes: what inference uses."""
        return torch.softmax(self.forward(x), dim=1)


def check_input_shape(shape: Sequence[int]) -> None:
    """Refuse spatial sizes the four stride-2 levels cannot halve cleanly."""
    bad = [int(s) for s in shape if int(s) % DIVISOR or int(s) <= 0]
    if bad:
        raise ValueError(
            f"VB-Net input size {tuple(int(s) for s in shape)} must be a positive multiple of "
            f"{DIVISOR} in every dimension (pad or crop it, e.g. to "
            f"{tuple(round_up(int(s)) for s in shape)})"
        )


def round_up(n: int, multiple: int = DIVISOR) -> int:
    return max(multiple, int(math.ceil(n / multiple)) * multiple)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
