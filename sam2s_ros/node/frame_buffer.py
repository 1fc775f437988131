"""Hand-over between the ROS callbacks and the inference worker (thread-safe, bounded).

- :class:`FrameBuffer`: a latest-frame-wins slot (a frame that the worker did not take
  before the next one arrived is dropped and counted) plus a short ring of recent frames
  by stamp, so that a prompt stamped with a recent image is applied to that image.
- :class:`PromptQueue`: accepted prompts waiting for their frame (bounded FIFO).

Nothing here grows without bound: the slot holds one frame, the ring ``ring_size``
frames, the prompt queue ``max_size`` prompts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Frame:
    """One converted input image.

    Attributes:
        image: [H, W, 3] uint8 RGB at source resolution.
        header: the source message's std_msgs/Header (stamp + frame_id), copied to outputs.
        stamp_ns: header stamp in nanoseconds (0 = unstamped).
        received: time.monotonic() when the message arrived (s), for latency.
    """

    image: np.ndarray
    header: Any
    stamp_ns: int
    received: float

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.image.shape[0]), int(self.image.shape[1])


class FrameBuffer:
    """Latest-frame slot + ring of recent frames by stamp.

    Args:
        ring_size: recent frames kept for stamped prompts (0 = none). Frames with a zero
            stamp are never put in the ring; a repeated stamp replaces the older frame.
    """

    def __init__(self, ring_size: int) -> None:
        if ring_size < 0:
            raise ValueError("ring_size must be >= 0")
        self._ring_size = ring_size
        self._ring: OrderedDict[int, Frame] = OrderedDict()
        self._latest: Optional[Frame] = None
        self._last_hw: Optional[tuple[int, int]] = None
        self._dropped = 0
        self._closed = False
        self._wake = False
        self._cond = threading.Condition()

    def put(self, frame: Frame) -> bool:
        """Offer a new frame; returns True when an untaken frame was overwritten (a drop)."""
        with self._cond:
            dropped = self._latest is not None
            if dropped:
                self._dropped += 1
            self._latest = frame
            self._last_hw = frame.hw
            if self._ring_size and frame.stamp_ns:
                self._ring.pop(frame.stamp_ns, None)
                self._ring[frame.stamp_ns] = frame
                while len(self._ring) > self._ring_size:
                    self._ring.popitem(last=False)
            self._cond.notify_all()
            return dropped

    def take_latest(self, timeout: float) -> Optional[Frame]:
        """Wait up to ``timeout`` s for a frame and take it; None on timeout, wake() or close()."""
        with self._cond:
            if self._latest is None and not self._closed and not self._wake:
                self._cond.wait(timeout)
            self._wake = False
            frame, self._latest = self._latest, None
            return frame

    def find(self, stamp_ns: int) -> Optional[Frame]:
        """The ring's frame with this stamp, or None (also for stamp 0)."""
        if not stamp_ns:
            return None
        with self._cond:
            return self._ring.get(stamp_ns)

    @property
    def last_hw(self) -> Optional[tuple[int, int]]:
        """(height, width) of the most recently received frame; None before the first."""
        with self._cond:
            return self._last_hw

    @property
    def dropped(self) -> int:
        """Frames overwritten before the worker took them, since construction."""
        with self._cond:
            return self._dropped

    def __len__(self) -> int:
        """Frames held in the ring."""
        with self._cond:
            return len(self._ring)

    def wake(self) -> None:
        """Make a waiting take_latest() return now (e.g. a prompt for a held frame arrived)."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def close(self) -> None:
        """Release every waiter for good and drop the frames held."""
        with self._cond:
            self._closed = True
            self._latest = None
            self._ring.clear()
            self._cond.notify_all()


class PromptQueue(Generic[T]):
    """Bounded FIFO of pending items (prompts with their target stamp).

    Args:
        max_size: most items held; push() refuses more.
    """

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self._max_size = max_size
        self._items: deque[T] = deque()
        self._lock = threading.Lock()

    def push(self, item: T) -> bool:
        """Append ``item``; False (not added) when the queue is full."""
        with self._lock:
            if len(self._items) >= self._max_size:
                return False
            self._items.append(item)
            return True

    def pop_all(self) -> list[T]:
        """Remove and return every item, oldest first."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def pop_if(self, take: Callable[[T], bool]) -> list[T]:
        """Remove and return the items for which ``take(item)`` is true, oldest first.

        The other items stay queued, in their order.
        """
        with self._lock:
            taken = [item for item in self._items if take(item)]
            if taken:
                self._items = deque(item for item in self._items if not take(item))
            return taken

    def snapshot(self) -> list[T]:
        """Copy of the items, oldest first (for counting, not for consuming)."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Drop every item."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
