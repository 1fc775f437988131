"""MobileSAM's image encoder (TinyViT-5M with a SAM neck) as a plain torch module.

Architecture (TinyViT-5M as modified by MobileSAM; all activations GELU, eval-mode BatchNorm):

  ======================  ==========================================================  ==============
  stage                   content                                                     output
  ======================  ==========================================================  ==============
  ``patch_embed``         conv3x3/2 (3->32) + BN, GELU, conv3x3/2 (32->64) + BN      64  x S/4
  ``layers[0]``           2 MBConv blocks (1x1 expand x4, dw 3x3, 1x1, residual),      128 x S/8
                          then PatchMerging 64->128 (1x1, dw 3x3 stride 2, 1x1)
  ``layers[1]``           2 TinyViT blocks, 4 heads, window 7, PatchMerging 128->160   160 x S/16
  ``layers[2]``           6 TinyViT blocks, 5 heads, window 14, PatchMerging 160->320  320 x S/16
                          whose depthwise conv has stride 1 (MobileSAM drops the last
                          downsampling so that the output stays at stride 16)
  ``layers[3]``           2 TinyViT blocks, 10 heads, window 7                         320 x S/16
  ``neck``                conv1x1 320->256, LayerNorm2d, conv3x3 256->256, LayerNorm2d 256 x S/16
  ======================  ==========================================================  ==============

A TinyViT block is ``x + WindowAttention(x)`` (LayerNorm inside the attention, windows padded with
zeros at the bottom/right, key dim = head dim, learned relative position bias per head indexed by
the absolute (dy, dx) offset inside the window), then a depthwise 3x3 conv + BN (``local_conv``, no
residual), then ``x + Mlp(x)`` (LayerNorm, fc x4, GELU, fc). The ``qkv`` projection is laid out per
head as [q | k | v]. ``x + F(x)`` uses no drop path (inference only).

State dict keys are exactly MobileSAM's ``image_encoder.*`` keys with the prefix removed, e.g.
``patch_embed.seq.0.c.weight``, ``patch_embed.seq.0.bn.running_var``,
``layers.0.blocks.1.conv2.bn.weight``, ``layers.0.downsample.conv3.c.weight``,
``layers.2.blocks.5.attn.attention_biases``, ``layers.2.blocks.5.attn.qkv.weight``,
``layers.3.blocks.1.mlp.fc2.bias``, ``layers.1.blocks.0.local_conv.bn.num_batches_tracked``,
``neck.3.weight``; ``attention_bias_idxs`` is a non-persistent buffer (as in the reference; the
file does not hold it) and is rebuilt from the window size. The unused classification head
(``norm_head``, ``head``) is kept only so that the keys match the file.

Inputs/outputs (float32): ``x`` [B, 3, S, S], S a multiple of 32, SAM-1 normalised RGB
(``(pixel - PIXEL_MEAN) / PIXEL_STD`` on 0..255 values) -> ``(feat_s4, feat_s8, embed)``:

* ``feat_s4`` [B, 64, S/4, S/4]: output of ``patch_embed`` = input of ``layers[0]`` (the only
  64-channel stride-4 tensor before the first MBConv stage);
* ``feat_s8`` [B, 128, S/8, S/8]: output of ``layers[0]`` (after its PatchMerging) = input of
  ``layers[1]``;
* ``embed`` [B, 256, S/16, S/16]: the neck output, what MobileSAM's mask decoder consumes.

Both skips are taken at stage inputs, so each is the first activation at its stride. Weights do
not depend on S (the window attention pads to whole windows); only the static shapes do, which keeps
the module ``torch.onnx`` friendly (no control flow on tensor values).

Licence: the architecture follows MobileSAM (Zhang et al. 2023, "Faster Segment Anything",
arXiv:2306.14289, https://github.com/ChaoningZhang/MobileSAM) and TinyViT (Microsoft, 2022), both
Apache-2.0. This is an independent re-implementation; weights loaded into it are MobileSAM's
(Apache-2.0, keep the attribution with any derived weights).
"""

from __future__ import annotations

import itertools
import os

import torch
import torch.nn.functional as F
from torch import nn

from sam2s_ros.errors import CheckpointError

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
EMBED_DIMS = (64, 128, 160, 320)
DEPTHS = (2, 2, 6, 2)
NUM_HEADS = (2, 4, 5, 10)  # stage 0 is convolutional: its head count is unused
WINDOW_SIZES = (7, 7, 14, 7)
NECK_DIM = 256
PREFIX = "image_encoder."


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (keys ``c.*``, ``bn.*``)."""

    def __init__(self, cin: int, cout: int, ks: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, ks, stride, ks // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (SAM's, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convs with BN and a GELU between them (keys ``seq.0.*``, ``seq.2.*``): 3 -> dim at S/4."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise 3x3, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand: int = 4) -> None:
        super().__init__()
        hidden = dim * expand
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(x + self.conv3(y))


class PatchMerging(nn.Module):
    """1x1 conv, GELU, depthwise 3x3 conv (stride 2 or 1), GELU, 1x1 conv; NCHW in and out."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention over the tokens of one window, with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                idxs.append(offsets.setdefault((abs(p1[0] - p2[0]), abs(p1[1] - p2[1])), len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        n = len(points)
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs, dtype=torch.long).view(n, n), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B', N, C] -> [B', N, C]
        bw, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(bw, n, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=3)  # each [B', heads, N, head_dim]
        bias = self.attention_biases[:, self.attention_bias_idxs]  # [heads, N, N]
        attn = torch.softmax((q * self.head_dim**-0.5) @ k.transpose(-2, -1) + bias, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """LayerNorm, fc (x4), GELU, fc."""

    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (+residual), depthwise 3x3 conv + BN, MLP (+residual); NCHW in and out."""

    def __init__(self, dim: int, num_heads: int, window: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.window = window
        self.resolution = resolution
        self.attn = Attention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        self.mlp = Mlp(dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:  # [B, H, W, C] -> [B, H, W, C]
        (h, w), ws = self.resolution, self.window
        c = x.shape[-1]
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws  # static: from the construction-time size
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.reshape(-1, nh, ws, nw, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        x = self.attn(x)
        x = x.reshape(-1, nh, nw, ws, ws, c).transpose(2, 3).reshape(-1, ph, pw, c)
        return x[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.permute(0, 2, 3, 1)
        t = t + self._window_attention(t)
        x = self.local_conv(t.permute(0, 3, 1, 2))
        t = x.permute(0, 2, 3, 1)
        t = t + self.mlp(t)
        return t.permute(0, 3, 1, 2)


class Stage(nn.Module):
    """``blocks`` then an optional ``downsample`` (keys ``blocks.i.*``, ``downsample.*``)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """MobileSAM image encoder; see the module docstring for the layout and the returned tensors."""

    def __init__(self, img_size: int = 1024) -> None:
        super().__init__()
        if img_size <= 0 or img_size % 32:
            raise ValueError(f"img_size must be a positive multiple of 32, got {img_size}")
        self.img_size = img_size
        d = EMBED_DIMS
        self.patch_embed = PatchEmbed(d[0])
        layers: list[nn.Module] = [Stage([MBConv(d[0]) for _ in range(DEPTHS[0])], PatchMerging(d[0], d[1], 2))]
        side = img_size // 8
        for i in range(1, 4):
            blocks = [TinyViTBlock(d[i], NUM_HEADS[i], WINDOW_SIZES[i], (side, side)) for _ in range(DEPTHS[i])]
            down = None
            if i < 3:
                stride = 2 if i == 1 else 1  # MobileSAM: no downsampling before the last stage
                down = PatchMerging(d[i], d[i + 1], stride)
                side //= stride
            layers.append(Stage(blocks, down))
        self.layers = nn.ModuleList(layers)
        self.norm_head = nn.LayerNorm(d[3])  # unused classification head, kept for the keys
        self.head = nn.Linear(d[3], 1000)
        self.neck = nn.Sequential(
            nn.Conv2d(d[3], NECK_DIM, 1, bias=False),
            LayerNorm2d(NECK_DIM),
            nn.Conv2d(NECK_DIM, NECK_DIM, 3, padding=1, bias=False),
            LayerNorm2d(NECK_DIM),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, 3, S, S] normalised RGB -> feat_s4 [B,64,S/4,S/4], feat_s8 [B,128,S/8,S/8], embed [B,256,S/16,S/16]."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != self.img_size or x.shape[3] != self.img_size:
            raise ValueError(f"expected [B, 3, {self.img_size}, {self.img_size}], got {list(x.shape)}")
        feat_s4 = self.patch_embed(x)
        feat_s8 = self.layers[0](feat_s4)
        y = feat_s8
        for layer in self.layers[1:]:
            y = layer(y)
        return feat_s4, feat_s8, self.neck(y)


def load_mobilesam_image_encoder(path: str, img_size: int) -> TinyViT:
    """Build a :class:`TinyViT` for ``img_size`` and strictly load the ``image_encoder.*`` tensors of ``path``.

    ``path`` is a MobileSAM ``mobile_sam.pt`` (a plain state dict; a ``{"model": ...}`` wrapper is
    accepted too). Returns the module in eval mode on the CPU.

    Raises:
        CheckpointError: missing/unreadable file, no ``image_encoder.*`` keys, or keys/shapes that
            do not match (the offending keys are named).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"MobileSAM checkpoint {path!r} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file or pickled code
        raise CheckpointError(f"cannot read MobileSAM checkpoint {path!r}: {exc}") from exc
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path!r} does not hold a state dict")
    enc = {k[len(PREFIX) :]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(PREFIX)}
    if not enc:
        raise CheckpointError(f"{path!r} holds no {PREFIX}* tensors: not a MobileSAM checkpoint")
    model = TinyViT(img_size)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(enc))
    unexpected = sorted(set(enc) - set(expected))
    wrong = sorted(k for k in set(expected) & set(enc) if tuple(enc[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path!r} does not fit the MobileSAM TinyViT encoder: missing {missing[:8]} ({len(missing)}), "
            f"unexpected {unexpected[:8]} ({len(unexpected)}), wrong shape {wrong[:8]} ({len(wrong)})"
        )
    model.load_state_dict(enc, strict=True)
    return model.eval()
