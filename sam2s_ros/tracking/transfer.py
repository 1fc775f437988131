"""Host <-> device transfers of the tracker's per-frame path, all in one place.

On a GPU every blocking copy stalls the host until the device queue drains, so the
per-frame path is built to need exactly one: :func:`to_host` packs everything the host
needs from a frame (the bool masks and a small float32 table of scores) into one buffer and
copies it once. Uploads never block: small constants (normalisation, memory-layout index
tensors, row flags) are built once per value and cached (:func:`constant`), per-frame data
(the image, pointer distances) goes through pinned memory asynchronously (:func:`upload`).
On the CPU all of this is a no-op: tensors are already host memory and ``to_host`` returns
views, so results are the same to the bit on either path.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence, Union

import numpy as np
import torch

#: distinct constants kept per process (layouts of memory banks, flags, normalisation)
CONSTANT_CACHE_SIZE = 512

_constants: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()


def constant(values: Sequence, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor of ``values`` on ``device``, uploaded once per distinct value (LRU cache).

    Args:
        values: nested tuples of Python numbers (hashable; the tensor's shape follows the nesting).
        dtype: torch dtype of the tensor.
        device: target device.

    Returns:
        A shared tensor: callers must not modify it in place.
    """
    key = (values, dtype, torch.device(device), torch.is_inference_mode_enabled())
    t = _constants.get(key)
    if t is None:
        t = torch.tensor(values, dtype=dtype, device=device)
        _constants[key] = t
        if len(_constants) > CONSTANT_CACHE_SIZE:
            _constants.popitem(last=False)
    else:
        _constants.move_to_end(key)
    return t


def upload(data: Union[np.ndarray, torch.Tensor], device: torch.device) -> torch.Tensor:
    """Host data -> ``device`` without blocking the host (pinned, asynchronous copy on CUDA).

    Args:
        data: numpy array or CPU tensor (any dtype torch supports).
        device: target device; on CPU ``data`` is returned as a tensor without a copy.
    """
    t = torch.from_numpy(np.ascontiguousarray(data)) if isinstance(data, np.ndarray) else data
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def to_host(*tensors: torch.Tensor) -> list[np.ndarray]:
    """One device -> host copy for several tensors (packed into one byte buffer).

    Args:
        tensors: tensors on one device (any shapes; dtypes float32, int64, bool, uint8, ...).

    Returns:
        One numpy array per tensor, same shape and dtype (bool stays bool). On the CPU these
        are views of the tensors (no copy); on a GPU they are views of one host buffer.
    """
    tensors = tuple(t.detach() for t in tensors)
    if all(t.device.type == "cpu" for t in tensors):
        return [t.numpy() for t in tensors]
    return packed_copy(tensors)


def packed_copy(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """:func:`to_host`'s device path: pack into one uint8 buffer, one ``.cpu()``, unpack as views."""
    # widest dtypes first: every array starts aligned in the packed buffer
    order = sorted(range(len(tensors)), key=lambda i: -tensors[i].element_size())
    flat = torch.cat([tensors[i].contiguous().reshape(-1).view(torch.uint8) for i in order])
    host = flat.cpu().numpy()
    out: list[np.ndarray] = [np.empty(0)] * len(tensors)
    offset = 0
    for i in order:
        t = tensors[i]
        n = t.numel() * t.element_size()
        dtype = np.bool_ if t.dtype == torch.bool else torch.empty(0, dtype=t.dtype).numpy().dtype
        out[i] = host[offset : offset + n].view(dtype).reshape(tuple(t.shape))
        offset += n
    return out
