"""No callback ends the process: unexpected errors are contained, logged once and counted.

:class:`CallbackGuard` wraps every service, subscription and timer callback of the node,
rclpy's own parameter and lifecycle services included (the node routes ``create_service`` /
``create_subscription`` / ``create_timer`` through it, and wraps the lifecycle services, which
rclpy creates without ``create_service``, with :meth:`CallbackGuard.guard_service`). An exception that the callback did
not handle itself is logged once per (callback, error) with its traceback (repeats are
counted, and logged again at most every ``period_s``), counted in /diagnostics
(``internal_errors``), and a service gets a reply with ``success`` / ``accepted`` false and
the reason instead of the executor raising out of ``spin()``.
:func:`run_supervised` restarts a worker loop that raised, a bounded number of times.
"""

from __future__ import annotations

import functools
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any, Callable, Optional

from rcl_interfaces.msg import SetParametersResult

from sam2s_ros.node.diagnostics import NodeStats

MAX_LOGGED_KEYS = 256  # distinct (callback, error) pairs remembered for throttling


class CallbackGuard:
    """Contain and report exceptions escaping callbacks.

    Args:
        stats: where errors are counted (``internal_errors``).
        log: logging function taking one string (e.g. ``node.get_logger().error``).
        period_s: an identical (callback, error) is logged at most once per period.
    """

    def __init__(self, stats: NodeStats, log: Callable[[str], Any], period_s: float = 10.0) -> None:
        self._stats, self._log, self._period = stats, log, period_s
        self._seen: OrderedDict[tuple[str, str], list] = OrderedDict()  # key -> [last log time, repeats]
        self._lock = threading.Lock()

    def report(self, where: str, exc: BaseException) -> str:
        """Count + log one unexpected exception raised in ``where``; returns the reason text."""
        reason = f"internal error in {where}: {type(exc).__name__}: {exc}"[:1000]
        try:
            self._stats.internal_error(reason)
            key = (where, f"{type(exc).__name__}: {exc}"[:300])
            now = time.monotonic()
            with self._lock:
                entry = self._seen.get(key)
                if entry is not None and now - entry[0] < self._period:
                    entry[1] += 1
                    return reason
                repeats = entry[1] if entry is not None else 0
                self._seen.pop(key, None)
                self._seen[key] = [now, 0]
                while len(self._seen) > MAX_LOGGED_KEYS:
                    self._seen.popitem(last=False)
            extra = f" ({repeats} identical since last report)" if repeats else ""
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._log(f"{reason}{extra}; the node keeps running\n{trace}")
        except Exception:  # noqa: BLE001 (reporting must never raise out of a callback)
            pass
        return reason

    def service(self, srv_type: Any, name: str, callback: Callable) -> Callable:
        """``callback(request, response)`` that answers a failure reply instead of raising."""

        @functools.wraps(callback)
        def guarded(request, response):
            try:
                return callback(request, response)
            except Exception as exc:  # noqa: BLE001 (the boundary: nothing may reach the executor)
                return failure_response(srv_type, request, self.report(f"service {name}", exc))

        return guarded

    def guard_service(self, service: Any) -> None:
        """Guard an existing rclpy Service in place (its ``callback`` attribute)."""
        service.callback = self.service(service.srv_type, service.srv_name, service.callback)

    def callback(self, where: str, callback: Callable) -> Callable:
        """A subscription / timer callback that reports instead of raising (same signature)."""

        @functools.wraps(callback)
        def guarded(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 (the boundary)
                self.report(where, exc)
                return None

        return guarded


def failure_response(srv_type: Any, request: Any, reason: str) -> Any:
    """A fresh ``srv_type.Response`` that says "failed" with ``reason``, whatever the service.

    Fields set when present: ``success`` / ``accepted`` = False, ``reason`` (``message``
    for std_srvs/Trigger); for rcl_interfaces SetParameters(-Atomically), one unsuccessful
    result per parameter; lifecycle_msgs ChangeState gets ``success`` False.
    """
    response = srv_type.Response()
    for flag in ("success", "accepted"):
        if hasattr(response, flag):
            setattr(response, flag, False)
    if hasattr(response, "reason"):
        response.reason = reason
    if isinstance(getattr(response, "message", None), str):  # std_srvs/Trigger
        response.message = reason
    if hasattr(response, "results") and hasattr(request, "parameters"):  # SetParameters
        response.results = [SetParametersResult(successful=False, reason=reason) for _ in request.parameters]
    if hasattr(response, "result") and isinstance(getattr(response, "result"), SetParametersResult):
        response.result = SetParametersResult(successful=False, reason=reason)
    return response


def run_supervised(
    loop: Callable[[], None],
    stopped: Callable[[], bool],
    on_error: Callable[[BaseException, int], bool],
    backoff_s: float = 1.0,
    window_s: Optional[float] = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``loop()`` until it returns; restart it after an exception while ``on_error`` agrees.

    Args:
        loop: the worker's body; returning means "stopped normally".
        stopped: True once the worker should end (no restart, no report).
        on_error: called with the exception and the number of restarts so far (within the
            last ``window_s`` seconds when given); returns True to restart (after
            ``backoff_s``), False to give up.
        backoff_s: pause before a restart (s).
        window_s: count only restarts of the last ``window_s`` seconds, so that errors that
            come in a burst stop the worker but rare ones over a long procedure do not use up
            the budget; None = count every restart since the start.
        clock: monotonic time source in seconds (tests pass a fake).
    """
    restart_times: list[float] = []
    while not stopped():
        try:
            loop()
            return
        except Exception as exc:  # noqa: BLE001 (thread boundary)
            now = clock()
            if window_s is not None:
                restart_times = [t for t in restart_times if now - t < window_s]
            if stopped() or not on_error(exc, len(restart_times)):
                return
            restart_times.append(now)
            time.sleep(backoff_s)
