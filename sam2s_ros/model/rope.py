"""Real-valued 2-D axial rotary position encoding (RoPE), numerically equal to SAM 2's.

SAM 2 (``sam2/modeling/position_encoding.py``: ``compute_axial_cis``, ``apply_rotary_enc``)
writes RoPE with complex tensors, which ONNX cannot export (sam2 issue #186). Here the same
rotation is written with cos/sin: for each channel pair (x[2i], x[2i+1]) and angle a,
(x[2i], x[2i+1]) -> (x[2i] cos a - x[2i+1] sin a, x[2i] sin a + x[2i+1] cos a).
"""

from __future__ import annotations

import torch


def axial_rope_angles(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles of SAM 2's axial RoPE.

    Args:
        dim: attention head dimension (multiple of 4).
        end_x, end_y: feature grid width and height (tokens are row-major, x fastest).
        theta: RoPE base (SAM 2: 10000).

    Returns:
        [end_x * end_y, dim // 2] float32 angles in radians: the first dim // 4 columns
        rotate by x position, the last dim // 4 by y position.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    return torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x``.

    Args:
        x: [..., N, D] float tensor (N tokens, D channels).
        cos, sin: [N, D // 2] (broadcast over the leading dims).

    Returns:
        Tensor of x's shape and dtype.
    """
    xf = x.float().reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    xe, xo = xf[..., 0], xf[..., 1]
    out = torch.stack([xe * cos - xo * sin, xe * sin + xo * cos], dim=-1)
    return out.flatten(-2).type_as(x)
