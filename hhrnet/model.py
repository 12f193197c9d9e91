"""HigherHRNet: the HRNet backbone and the higher-resolution head, in one file.

Read it top to bottom: residual blocks, the multi-resolution module (parallel branches + fusion), the
transitions that add a lower-resolution branch before each stage, and finally the head that predicts
heatmaps + tags at 1/4 resolution and, after a deconvolution, heatmaps at 1/2 resolution.

Attribute names follow the official implementation exactly (``conv1``, ``layer1``, ``transition1``,
``stage2``, ``fuse_layers``, ``final_layers``, ``deconv_layers`` ...) so that a published checkpoint's
state dict loads with ``strict=True`` after stripping mmpose's ``backbone.``/``keypoint_head.`` prefixes
(see ``checkpoints.py``).  Module *registration order* matches too, so ``state_dict()`` lists keys in
the published order.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .sections import ModelConfig

INIT_SCHEMES = ("official", "he")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    """Conv → BN (→ ReLU): the unit used by transitions and fusion; the Sequential indices (0 conv,
    1 bn) are part of the published key names."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity shortcut (HRNet branches and the head)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 → 1×1 expand (×4), used only in the first stage (``layer1``)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def residual_layer(block: type[BasicBlock] | type[Bottleneck], in_channels: int, planes: int,
                   num_blocks: int) -> nn.Sequential:
    """``num_blocks`` blocks; the first gets a 1×1 conv-BN shortcut when the channel count changes."""
    out_channels = planes * block.expansion
    downsample = None
    if in_channels != out_channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
    blocks = [block(in_channels, planes, downsample=downsample)]
    blocks += [block(out_channels, planes) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class HighResolutionModule(nn.Module):
    """Parallel branches at resolutions 1, 1/2, 1/4, ... followed by all-to-all fusion.

    Fusion into branch ``i`` sums every branch ``j``: a 1×1 conv + nearest upsampling when ``j`` is
    lower-resolution, a chain of strided 3×3 convs when ``j`` is higher-resolution.  With
    ``multi_scale_output=False`` only branch 0 is produced (the last module of the network).
    """

    def __init__(self, channels: tuple[int, ...], num_blocks: int, multi_scale_output: bool = True):
        super().__init__()
        self.branches = nn.ModuleList(residual_layer(BasicBlock, c, c, num_blocks) for c in channels)
        self.fuse_layers = self._fuse_layers(channels, multi_scale_output) if len(channels) > 1 else None
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _fuse_layers(channels: tuple[int, ...], multi_scale_output: bool) -> nn.ModuleList:
        def path(j: int, i: int) -> nn.Module | None:
            if j == i:
                return None
            if j > i:  # lower resolution → match channels, then upsample
                return nn.Sequential(
                    nn.Conv2d(channels[j], channels[i], 1, bias=False),
                    nn.BatchNorm2d(channels[i]),
                    nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                )
            steps = i - j  # higher resolution → strided 3×3 convs; channels change only at the last step
            return nn.Sequential(*(
                conv_bn(channels[j], channels[i] if k == steps - 1 else channels[j], 3, 2, relu=k < steps - 1)
                for k in range(steps)
            ))

        outputs = len(channels) if multi_scale_output else 1
        return nn.ModuleList(nn.ModuleList(path(j, i) for j in range(len(channels))) for i in range(outputs))

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for paths in self.fuse_layers:
            y = None
            for j, (path, x) in enumerate(zip(paths, xs)):
                term = x if path is None else path(x)
                y = term if y is None else y + term
            fused.append(self.relu(y))
        return fused


def transition_layer(in_channels: tuple[int, ...], out_channels: tuple[int, ...]) -> nn.ModuleList:
    """Between stages: adapt existing branches (only if their width changes) and create the new
    lowest-resolution branch from the previous lowest one with a strided 3×3 conv."""
    layers: list[nn.Module | None] = []
    for i, c_out in enumerate(out_channels):
        if i < len(in_channels):
            layers.append(conv_bn(in_channels[i], c_out, 3, 1, relu=True) if in_channels[i] != c_out else None)
        else:
            c_in = in_channels[-1]
            steps = i + 1 - len(in_channels)
            layers.append(nn.Sequential(*(
                conv_bn(c_in, c_out if k == steps - 1 else c_in, 3, 2, relu=True) for k in range(steps)
            )))
    return nn.ModuleList(layers)


class HigherHRNet(nn.Module):
    """HRNet-W``width`` backbone + HigherHRNet head.

    ``forward(x)`` returns one tensor per resolution: output 0 at 1/4 of the input with
    ``num_joints`` heatmaps (+ tag maps where ``with_ae_loss``), then one output per deconv, each at
    twice the previous resolution.  Input sides must be multiples of 32 for the branches to align.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        stem = cfg.stem_channels
        # Stem: two strided 3×3 convs take the input to 1/4 resolution.
        self.conv1 = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        # Stage 1: Bottlenecks at 1/4 resolution.
        self.layer1 = residual_layer(Bottleneck, stem, cfg.layer1_planes, cfg.layer1_blocks)
        channels: tuple[int, ...] = (cfg.layer1_planes * Bottleneck.expansion,)
        # Stages 2-4: each adds a branch at half the resolution of the previous lowest one.
        for stage, num_modules in zip((2, 3, 4), cfg.stage_modules):
            new_channels = cfg.branch_channels(stage)
            setattr(self, f"transition{stage - 1}", transition_layer(channels, new_channels))
            last_stage = stage == 4
            setattr(self, f"stage{stage}", nn.Sequential(*(
                HighResolutionModule(new_channels, cfg.blocks_per_branch,
                                     multi_scale_output=not (last_stage and m == num_modules - 1))
                for m in range(num_modules)
            )))
            channels = new_channels
        # Head: final 1×1 (or 3×3) convs per output, and the deconv modules between outputs.
        self.final_layers = nn.ModuleList(
            nn.Conv2d(cfg.width, cfg.output_channels(i), cfg.final_conv_kernel, padding=cfg.final_conv_kernel // 2)
            for i in range(cfg.num_deconvs + 1)
        )
        self.deconv_layers = nn.ModuleList(self._deconv_module(i) for i in range(cfg.num_deconvs))
        self.reset_parameters()

    def _deconv_module(self, i: int) -> nn.Sequential:
        """Concatenate the previous output to the features (``cat_output``), upsample ×2 with a
        transposed conv, refine with BasicBlocks (each wrapped in a 1-element Sequential, as published)."""
        cfg = self.cfg
        in_channels = cfg.width + (cfg.output_channels(i) if cfg.cat_output else 0)
        padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[cfg.deconv_kernel]
        up = nn.Sequential(
            nn.ConvTranspose2d(in_channels, cfg.width, cfg.deconv_kernel, stride=2, padding=padding,
                               output_padding=output_padding, bias=False),
            nn.BatchNorm2d(cfg.width),
            nn.ReLU(inplace=True),
        )
        refine = [nn.Sequential(BasicBlock(cfg.width, cfg.width)) for _ in range(cfg.num_basic_blocks)]
        return nn.Sequential(up, *refine)

    def reset_parameters(self, init: str = "official") -> None:
        """``official``: N(0, 0.001) convolutions, zero biases, unit BatchNorm.

        ``he``: He-normal (fan-out) weights for every convolution followed by BatchNorm, the final layers
        as official.  The official scheme is made for an ImageNet-initialised backbone; trained from
        scratch with Adam, steps of ``lr`` on weights of 0.001 rescale every layer at each step.
        """
        if init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {', '.join(INIT_SCHEMES)}, got {init!r}")
        final = {id(m) for m in self.final_layers}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                if init == "he" and id(m) not in final:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def backbone(self, x: Tensor) -> Tensor:
        """HRNet features of the highest-resolution branch (1/4 of the input, ``width`` channels)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            # Existing branches pass through; a new branch grows from the lowest-resolution one.
            inputs = [xs[min(i, len(xs) - 1)] for i in range(len(transition))]
            xs = [x if t is None else t(x) for x, t in zip(inputs, transition)]
            xs = getattr(self, f"stage{stage}")(xs)
        return xs[0]

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.backbone(x)
        outputs = [self.final_layers[0](features)]
        for deconv, final in zip(self.deconv_layers, self.final_layers[1:]):
            if self.cfg.cat_output:
                features = torch.cat((features, outputs[-1]), dim=1)
            features = deconv(features)
            outputs.append(final(features))
        return outputs


def fuse_for_inference(model: HigherHRNet) -> HigherHRNet:
    """A copy with every BatchNorm folded into the convolution before it, for evaluation only.

    In eval mode a BatchNorm is a per-channel affine map, so ``BN(conv(x))`` is one convolution with
    rescaled weights and a bias: same outputs up to float rounding, ~100 fewer kernels per forward.
    The copy's state dict no longer has the published key names; keep the original for checkpoints.
    """
    fused = copy.deepcopy(model).eval()
    for parent in fused.modules():
        children = dict(parent.named_children())
        names = list(children)
        pairs = zip(names, names[1:]) if isinstance(parent, nn.Sequential) else ((f"conv{i}", f"bn{i}") for i in (1, 2, 3))
        for conv_name, bn_name in pairs:
            conv, bn = children.get(conv_name), children.get(bn_name)
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d):
                transposed = isinstance(conv, nn.ConvTranspose2d)
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn, transpose=transposed))
                setattr(parent, bn_name, nn.Identity())
    return fused


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, input_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of all convolutions for one image (the usual "FLOPs" of pose papers).

    Counted from the real layer shapes with forward hooks, so it follows any configuration.
    BatchNorm, ReLU, additions and upsampling are not counted (they add ≈1%).
    """
    total = 0

    def conv_hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        k = m.weight.shape[2] * m.weight.shape[3]
        if isinstance(m, nn.ConvTranspose2d):
            total += inputs[0].numel() * m.out_channels * k // m.groups
        else:
            total += out.numel() * (m.in_channels // m.groups) * k

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        model(torch.zeros(1, 3, *input_hw, dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total
