"""Node health: counters, latency percentiles, bad-input reports and the /diagnostics message.

:class:`NodeStats` is updated from the callbacks and the worker (thread-safe, bounded);
:class:`BadInputReporter` counts each bad input by kind and logs it with its reason, once
per reason and period (identical messages are throttled, the count of suppressed repeats is
logged with the next one); :func:`diagnostic_array` turns a snapshot into a DiagnosticArray.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import psutil
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from sam2s_ros.codec import EmptyImageError, ImageTooLargeError, UnsupportedEncodingError
from sam2s_ros.errors import FrameError
from sam2s_ros.tracking.latency import latency_percentiles_ms

# Every bad-input kind the node counts (always reported, 0 included).
BAD_INPUT_KINDS = (
    "unsupported_encoding",  # image encoding / compressed format not convertible to RGB
    "zero_size_image",  # width or height 0, or no data
    "image_too_large",  # above max_image_width / max_image_height
    "malformed_image",  # data shorter than step * height, bad step
    "invalid_prompt",  # NaN / out-of-frame points, bad box or mask, bad mode...
    "prompt_before_image",  # prompt while no image was received yet
    "unknown_instrument",  # remove / refine of an id that is not tracked
    "too_many_instruments",  # a new instrument beyond max_instruments
    "prompt_queue_full",  # more pending prompts than prompt_queue_size
    "prompt_rejected_on_frame",  # accepted prompt that the tracker refused on its frame
    "state_file",  # save_state / load_state failed
    "frame_rejected",  # the tracker refused a frame
    "label_image_overflow",  # an id above 255 with a mono8 label image (e.g. after load_state)
)
LATENCY_WINDOW = 300  # processed frames kept for the latency percentiles


def frame_error_kind(err: FrameError) -> str:
    """Bad-input kind (one of BAD_INPUT_KINDS) of an image conversion error."""
    if isinstance(err, UnsupportedEncodingError):
        return "unsupported_encoding"
    if isinstance(err, EmptyImageError):
        return "zero_size_image"
    if isinstance(err, ImageTooLargeError):
        return "image_too_large"
    return "malformed_image"


@dataclass
class StatsSnapshot:
    """Counters at one instant (monotonic time ``at``, seconds)."""

    at: float
    received: int
    processed: int
    dropped: int
    latencies: np.ndarray  # [N] float64 seconds, the last LATENCY_WINDOW processed frames
    bad_input: dict[str, int]
    last_reasons: dict[str, str]
    prompts_applied: int
    internal_errors: int = 0
    last_internal_error: str = ""
    worker_restarts: int = 0


class NodeStats:
    """Thread-safe counters of the node (all bounded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received = 0
        self._processed = 0
        self._dropped = 0
        self._prompts_applied = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._bad: Counter[str] = Counter({k: 0 for k in BAD_INPUT_KINDS})
        self._last_reason: dict[str, str] = {}
        self._internal_errors = 0
        self._last_internal_error = ""
        self._worker_restarts = 0

    def frame_received(self) -> None:
        with self._lock:
            self._received += 1

    def frame_dropped(self) -> None:
        with self._lock:
            self._dropped += 1

    def frame_processed(self, latency_s: float, prompts_applied: int) -> None:
        with self._lock:
            self._processed += 1
            self._prompts_applied += prompts_applied
            self._latencies.append(latency_s)

    def bad_input(self, kind: str, reason: str) -> None:
        """Count one bad input of ``kind`` (one of BAD_INPUT_KINDS) and keep its reason."""
        with self._lock:
            self._bad[kind] += 1
            self._last_reason[kind] = reason

    def internal_error(self, reason: str) -> None:
        """Count one unexpected error contained by a callback guard or the worker supervisor."""
        with self._lock:
            self._internal_errors += 1
            self._last_internal_error = reason

    def worker_restarted(self) -> None:
        with self._lock:
            self._worker_restarts += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                at=time.monotonic(),
                received=self._received,
                processed=self._processed,
                dropped=self._dropped,
                latencies=np.array(self._latencies, dtype=np.float64),
                bad_input=dict(self._bad),
                last_reasons=dict(self._last_reason),
                prompts_applied=self._prompts_applied,
                internal_errors=self._internal_errors,
                last_internal_error=self._last_internal_error,
                worker_restarts=self._worker_restarts,
            )


class BadInputReporter:
    """Count + log bad inputs; an identical (kind, reason) is logged at most once per period.

    Args:
        stats: where to count.
        log: logging function taking one string (e.g. ``node.get_logger().warning``).
        period_s: throttle period per distinct message.
        max_keys: distinct messages remembered (oldest forgotten first).
    """

    def __init__(
        self, stats: NodeStats, log: Callable[[str], Any], period_s: float = 10.0, max_keys: int = 256
    ) -> None:
        self._stats = stats
        self._log = log
        self._period = period_s
        self._max_keys = max_keys
        self._seen: OrderedDict[tuple[str, str], list] = OrderedDict()  # key -> [last log time, suppressed]
        self._lock = threading.Lock()

    def report(self, kind: str, reason: str) -> None:
        """Count one bad input and log ``"<kind>: <reason>"`` unless logged within the period."""
        self._stats.bad_input(kind, reason)
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get((kind, reason))
            if entry is not None and now - entry[0] < self._period:
                entry[1] += 1
                return
            suppressed = entry[1] if entry is not None else 0
            self._seen.pop((kind, reason), None)
            self._seen[(kind, reason)] = [now, 0]
            while len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)
        extra = f" ({suppressed} identical since last report)" if suppressed else ""
        self._log(f"bad input [{kind}]: {reason}{extra}")


@dataclass
class RateMeter:
    """Rates between two successive snapshots."""

    last: Optional[StatsSnapshot] = None
    rates: dict[str, float] = field(default_factory=lambda: {"input": 0.0, "processed": 0.0})

    def update(self, snap: StatsSnapshot) -> dict[str, float]:
        if self.last is not None and snap.at > self.last.at:
            dt = snap.at - self.last.at
            self.rates = {
                "input": (snap.received - self.last.received) / dt,
                "processed": (snap.processed - self.last.processed) / dt,
            }
        self.last = snap
        return self.rates


def resident_memory_mb() -> float:
    """Resident set size of this process in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def diagnostic_array(
    snap: StatsSnapshot,
    rates: dict[str, float],
    tracker_info: dict,
    instrument_ids: list[int],
    name: str,
    stamp: Any,
    prompts_waiting: int = 0,
    worker_error: Optional[str] = None,
) -> DiagnosticArray:
    """One DiagnosticStatus named ``name`` with every counter as a KeyValue.

    Level: ERROR when the worker stopped for good, WARN when it was restarted after an
    error or with random weights, else OK.
    """
    lat = latency_percentiles_ms(snap.latencies)
    values = {
        "input_rate_hz": f"{rates['input']:.2f}",
        "processed_rate_hz": f"{rates['processed']:.2f}",
        "frames_received": str(snap.received),
        "frames_processed": str(snap.processed),
        "frames_dropped": str(snap.dropped),
        **{f"latency_{k}_ms": f"{v:.1f}" for k, v in lat.items()},
        "instruments_tracked": str(len(instrument_ids)),
        "instrument_ids": ",".join(str(i) for i in instrument_ids),
        "prompts_applied": str(snap.prompts_applied),
        "prompts_waiting": str(prompts_waiting),
        **{
            k: str(tracker_info.get(k, ""))
            for k in (
                "backend",
                "model",
                "image_size",
                "device",
                "weights",
                "semantic_head_trained",
                "cpu_threads",
                "backend_runtime",
                "backend_warmup_s",
            )
        },
        "resident_memory_mb": f"{resident_memory_mb():.1f}",
        "internal_errors": str(snap.internal_errors),
        "internal_errors.last": snap.last_internal_error,
        "worker_restarts": str(snap.worker_restarts),
        **{f"bad_input.{k}": str(v) for k, v in sorted(snap.bad_input.items())},
        **{f"bad_input.{k}.last_reason": v for k, v in sorted(snap.last_reasons.items())},
    }
    status = DiagnosticStatus(name=name, hardware_id=str(tracker_info.get("device", "")))
    if worker_error:
        status.level, status.message = DiagnosticStatus.ERROR, f"inference worker stopped: {worker_error}"
    elif snap.worker_restarts:
        status.level = DiagnosticStatus.WARN
        status.message = f"inference worker restarted {snap.worker_restarts} time(s) after errors"
    elif "random" in str(tracker_info.get("weights", "")):
        status.level, status.message = DiagnosticStatus.WARN, "random weights: outputs are meaningless"
    else:
        status.level, status.message = DiagnosticStatus.OK, "tracking"
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
