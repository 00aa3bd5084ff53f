"""StyleGAN2's residual discriminator (used unchanged by StyleGAN3; Karras et al. 2020).

Blocks b{res} from the image resolution down to 8 (fromrgb on the first, conv0, conv1 with a [1,3,3,1]
blur + stride-2 downsample, 1x1 skip, both branches scaled by sqrt(1/2)), then the epilogue b4:
minibatch standard deviation (group 4), conv, fc, out. Optional class conditioning through a mapping
network of c (projection discriminator), optional auxiliary head regressing the vertical coordinate
(InfinityGAN). Parameter names follow StyleGAN2 (b256.conv0.weight, b4.fc.weight, mapping.embed, ...).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import ops
from .layers import FullyConnected, normalize_2nd_moment


_DEFAULT_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2)}   # bias_act's default gains for the two we use


class Conv2dLayer(torch.nn.Module):
    """Equalised-lr conv with optional blur + stride-2 downsampling, then bias, activation and clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels, self.out_channels, self.activation = in_channels, out_channels, activation
        self.down, self.conv_clamp, self.kernel_size = down, conv_clamp, kernel_size
        self.register_buffer("resample_filter", ops.setup_filter([1, 3, 3, 1]))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = _DEFAULT_GAIN[activation]
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down > 1:
            # Blur with the 4-tap filter, then a strided conv (StyleGAN2's conv2d_resample fast paths).
            fw = self.resample_filter.shape[-1]
            pad = self.padding + (fw - self.down + 1) // 2, self.padding + (fw - self.down) // 2
            if self.kernel_size == 1:
                x = ops.upfirdn2d(x, self.resample_filter, down=self.down, padding=[pad[0], pad[1], pad[0], pad[1]])
                x = F.conv2d(x, w)
            else:
                x = ops.upfirdn2d(x, self.resample_filter, padding=[pad[0], pad[1], pad[0], pad[1]])
                x = F.conv2d(x, w, stride=self.down)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        b = None if self.bias is None else self.bias.to(x.dtype)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class DiscriminatorBlock(torch.nn.Module):
    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 use_fp16: bool, conv_clamp: Optional[float]):
        super().__init__()
        self.in_channels, self.use_fp16 = in_channels, use_fp16
        # Unused by the residual architecture; kept so StyleGAN2 state dicts load one to one.
        self.register_buffer("resample_filter", ops.setup_filter([1, 3, 3, 1]))
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Optional[torch.Tensor], img: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img.to(dtype))
        else:
            x = x.to(dtype)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStd(torch.nn.Module):
    """Appends the average standard deviation over groups of `group_size` samples as extra channels."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"Discriminator: batch size {n} must be divisible by the minibatch-std group "
                             f"size {g} (mbstd_group_size={self.group_size})")
        f = self.num_channels
        # Sample i belongs to group i % (n // g), as in StyleGAN2.
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)
        y = y.repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorMapping(torch.nn.Module):
    """c -> conditioning vector (StyleGAN2 MappingNetwork with z_dim = 0, no w_avg)."""

    def __init__(self, c_dim: int, cmap_dim: int, num_layers: int = 8, lr_multiplier: float = 0.01):
        super().__init__()
        self.num_layers = num_layers
        self.embed = FullyConnected(c_dim, cmap_dim)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnected(cmap_dim, cmap_dim, activation="lrelu",
                                                     lr_multiplier=lr_multiplier))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(self.embed(c.to(torch.float32)))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return x


class DiscriminatorEpilogue(torch.nn.Module):
    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, mbstd_group_size: int,
                 mbstd_num_channels: int, conv_clamp: Optional[float], aux_outputs: int):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnected(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnected(in_channels, 1 if cmap_dim == 0 else cmap_dim)
        # The auxiliary regression head has its own hidden layer on the flattened features, as in
        # InfinityGAN's discriminator, so it does not share the adversarial head's fc.
        if aux_outputs > 0:
            self.aux_fc = FullyConnected(in_channels * resolution ** 2, in_channels, activation="lrelu")
            self.aux = FullyConnected(in_channels, aux_outputs)
        else:
            self.aux_fc = self.aux = None

    def forward(self, x: torch.Tensor, cmap: Optional[torch.Tensor]):
        x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        flat = x.flatten(1)
        h = self.fc(flat)
        logits = self.out(h)
        if self.cmap_dim > 0:
            logits = (logits * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        aux = self.aux(self.aux_fc(flat)) if self.aux is not None else None
        return logits, aux


class Discriminator(torch.nn.Module):
    """StyleGAN2's residual discriminator.

    D(img, c=None) -> logits (B, 1); with aux_outputs > 0 it returns (logits, aux (B, aux_outputs)):
    the auxiliary head InfinityGAN uses to regress the patch's vertical coordinate (its own hidden
    layer on the flattened epilogue features; loss in `anyres_fast.train.infinity_losses`).

    Args:
        resolution: input size. A power of two >= 8, or with any_resolution=True any size >= 8
            (InfinityGAN's odd patches 101, 197, 389): the blocks are those of the nearest power of
            two (log2 rounded, as the published InfinityGAN D), each halving the size with floor, so
            101 -> 50 -> 25 -> 12 -> 6 -> 3 and the epilogue runs at that last size.
        aux_outputs: width of the auxiliary regression head (0: no head, the default).
        any_resolution: accept sizes that are not powers of two (default False: they raise).
        (other arguments as StyleGAN2's discriminator)

    Raises:
        ValueError: a resolution that is not allowed.
    """

    def __init__(self, resolution: int, img_channels: int = 3, c_dim: int = 0, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, conv_clamp: Optional[float] = 256.0,
                 cmap_dim: Optional[int] = None, mbstd_group_size: int = 4, mbstd_num_channels: int = 1,
                 mapping_layers: int = 8, aux_outputs: int = 0, any_resolution: bool = False):
        """Builds a randomly initialised discriminator.

        Args:
            resolution: input side, a power of two >= 8.
            img_channels: channels of the input images.
            c_dim: class-label width (0: unconditional).
            channel_base, channel_max: block b{r} has min(channel_base // r, channel_max) channels.
            num_fp16_res: the blocks of this many highest resolutions run in float16 on CUDA.
            conv_clamp: None or the clamp of the conv outputs (256 in StyleGAN2/3).
            cmap_dim: width of the conditioning projection (None: the 4x4 block's channels).
            mbstd_group_size: minibatch-std group size (the batch must be divisible by
                min(group, batch)); mbstd_num_channels: its channels (0 disables it).
            mapping_layers: depth of the label mapping network (conditional models).
            aux_outputs: width of the auxiliary head (0: none).
            any_resolution: accept sizes that are not powers of two (InfinityGAN's 101, 197, 389).

        Raises:
            ValueError: resolution not a power of two >= 8 (any size >= 8 with any_resolution).
        """
        super().__init__()
        if not isinstance(resolution, int) or resolution < 8:
            raise ValueError(f"Discriminator: resolution must be an integer >= 8, got {resolution!r}")
        if resolution & (resolution - 1) and not any_resolution:
            raise ValueError(f"Discriminator: resolution must be a power of two >= 8, got {resolution!r} "
                             f"(any_resolution=True accepts other sizes)")
        self.resolution, self.img_channels, self.c_dim = resolution, img_channels, c_dim
        self.aux_outputs = aux_outputs
        log2 = int(round(np.log2(resolution)))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        # Spatial size reaching the epilogue: every block halves with floor (4 for powers of two).
        epilogue_size = resolution
        for _ in self.block_resolutions:
            epilogue_size //= 2
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        for r in self.block_resolutions:
            in_ch = 0 if r == self.block_resolutions[0] else channels[r]     # 0: the block with fromrgb
            block = DiscriminatorBlock(in_ch, channels[r], channels[r // 2], img_channels,
                                       use_fp16=r >= fp16_resolution, conv_clamp=conv_clamp)
            setattr(self, f"b{r}", block)
        if c_dim > 0:
            self.mapping = DiscriminatorMapping(c_dim, cmap_dim, num_layers=mapping_layers)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim, epilogue_size, mbstd_group_size,
                                        mbstd_num_channels, conv_clamp, aux_outputs)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None, *, force_fp32: bool = False):
        """Scores a batch of images.

        Args:
            img: (B, img_channels, resolution, resolution) float tensor.
            c: (B, c_dim) labels for a conditional model, else None.
            force_fp32: bool; run every block in float32 (fp16 blocks are half only on CUDA).

        Returns:
            logits (B, 1) float32, or (logits, aux (B, aux_outputs) float32) when aux_outputs > 0.

        Raises:
            ValueError: img of the wrong shape, c missing or misshaped for a conditional model, a batch
                not divisible by the minibatch-std group.
        """
        want = (self.img_channels, self.resolution, self.resolution)
        if not isinstance(img, torch.Tensor) or img.ndim != 4 or tuple(img.shape[1:]) != want:
            raise ValueError(f"Discriminator: img must have shape (B, {want[0]}, {want[1]}, {want[2]}), got "
                             f"{tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__}")
        cmap = None
        if self.c_dim > 0:
            if c is None or c.shape != (img.shape[0], self.c_dim):
                raise ValueError(f"Discriminator: this model is conditional; c must have shape "
                                 f"({img.shape[0]}, {self.c_dim}), got {None if c is None else tuple(c.shape)}")
            cmap = self.mapping(c)
        half = img.device.type == "cuda" and not force_fp32
        # float64 images run in float64 throughout (gradient checks); otherwise float32 / fp16 blocks.
        full = torch.float64 if img.dtype == torch.float64 else torch.float32
        x = None
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            x = block(x, img, torch.float16 if (half and block.use_fp16 and full != torch.float64) else full)
        logits, aux = self.b4(x, cmap)
        return (logits, aux) if self.aux_outputs > 0 else logits
