"""``sam2s_node``: tracks surgical instruments in an image stream and publishes their masks.

Threads: the image callback only converts and validates a frame and puts it in the
latest-frame slot (:class:`~sam2s_ros.node.frame_buffer.FrameBuffer`); one worker thread runs
the tracker on the newest frame (skipped frames are counted) and publishes the results.
Prompts (topic or service) are checked against the image they refer to, queued, and
applied by the worker: to the frame with the prompt's stamp while it is still in the ring
of recent frames, else to the next processed frame. See docs/node_interface.md.

No callback ends the process: every service, subscription and timer callback (rclpy's
parameter services included) runs inside :class:`~sam2s_ros.node.guard.CallbackGuard`, and
the worker is restarted (at most WORKER_MAX_RESTARTS times) if it raises. State files are
read, validated and written off the tracker lock, inside ``state_dir`` only
(docs/hostile_inputs.md).

Run: ``sam2s_node --ros-args --params-file config/sam2s.yaml``.
"""

from __future__ import annotations

import threading
import time
from typing import Optional, Sequence

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sam2s_ros.codec import (
    classes_msg,
    image_msg,
    image_msg_to_rgb,
    label_image_msg,
    masks_msg,
    prompt_from_msg,
    stamp_to_ns,
    vocabulary_msg,
)
from sam2s_ros.errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    FrameError,
    PromptError,
    StateFileError,
    UnknownInstrumentError,
)
from sam2s_ros.msg import ClassVocabulary, InstrumentClassArray, InstrumentMaskArray, Prompt
from sam2s_ros.node.diagnostics import BadInputReporter, NodeStats, RateMeter, diagnostic_array, frame_error_kind
from sam2s_ros.node.frame_buffer import Frame, FrameBuffer, PromptQueue
from sam2s_ros.node.guard import CallbackGuard, run_supervised
from sam2s_ros.node.parameters import declare_parameters, inference_threads, read_parameters
from sam2s_ros.node.state_store import StateStore
from sam2s_ros.srv import AddPrompt, LoadState, RemoveInstrument, ResetTracker, SaveState
from sam2s_ros.tracking import state as tracker_state
from sam2s_ros.tracking.overlay import render_overlay
from sam2s_ros.tracking.tracker import InstrumentTracker
from sam2s_ros.tracking.types import FrameResult, PromptInput, PromptMode

NODE_NAME = "sam2s_node"
EXIT_BAD_CONFIG = 2
WORKER_POLL_S = 0.1  # worker wake-up period when no frame arrives (s)
WORKER_JOIN_S = 30.0  # longest wait for an in-flight track() at shutdown (s)
WORKER_MAX_RESTARTS = 5  # the worker is restarted after an unexpected error at most this often
WORKER_RESTART_BACKOFF_S = 1.0
EXECUTOR_THREADS = 5  # image, control, state files, diagnostics timer, rclpy's parameter services


class Sam2sNode(Node):
    """The ROS face of :class:`InstrumentTracker` (topics, services, diagnostics).

    Raises (from the constructor): ConfigError (invalid parameters), CheckpointError,
    BackendError (tracker cannot be built).
    """

    def __init__(self, **kwargs) -> None:
        # Before Node.__init__: it creates rclpy's parameter services through create_service.
        self._stats = NodeStats()
        self._guard = CallbackGuard(self._stats, lambda text: self.get_logger().error(text))
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self._cfg, self._settings = read_parameters(self)
        torch.set_num_threads(inference_threads(self._settings.num_threads))  # process-wide; onnxruntime follows it
        self._tracker = InstrumentTracker.from_config(self._cfg)
        backend_info = getattr(
            getattr(self._tracker, "backend", None), "describe", dict
        )()  # runtime, warm-up seconds (graph backends)
        self._info = {**self._tracker.describe(), **backend_info, "cpu_threads": torch.get_num_threads()}
        self._log_startup()

        s = self._settings
        self._tracker_lock = threading.Lock()  # the tracker is used by the worker and the services
        self._instrument_ids: list[int] = []
        self._frames = FrameBuffer(s.prompt_frame_buffer_size)
        self._prompts: PromptQueue[tuple[PromptInput, int]] = PromptQueue(s.prompt_queue_size)
        self._states = StateStore(s.state_dir)
        self._report = BadInputReporter(self._stats, self.get_logger().warning)
        self._rates = RateMeter()
        self._worker_error: Optional[str] = None
        self._generation = 0  # bumped by reset / load_state: prompts taken before belong to the old state
        self._stop = threading.Event()

        self._create_publishers()
        self._create_inputs()
        self._publish_vocabulary()
        self._worker = threading.Thread(target=self._run_worker, name="sam2s_inference", daemon=True)
        self._worker.start()

    # ---- every callback guarded -----------------------------------------------------------

    def create_service(self, srv_type, srv_name, callback, **kwargs):
        """Node.create_service with the callback guarded (a failure reply instead of an exception)."""
        return super().create_service(srv_type, srv_name, self._guard.service(srv_type, srv_name, callback), **kwargs)

    def create_subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        """Node.create_subscription with the callback guarded (logged + counted, never raised)."""
        guarded = self._guard.callback(f"subscription {topic}", callback)
        return super().create_subscription(msg_type, topic, guarded, qos_profile, **kwargs)

    def create_timer(self, timer_period_sec, callback, *args, **kwargs):
        """Node.create_timer with the callback guarded."""
        if callback is not None:
            callback = self._guard.callback("timer", callback)
        return super().create_timer(timer_period_sec, callback, *args, **kwargs)

    # ---- set-up ---------------------------------------------------------------------------

    def _log_startup(self) -> None:
        info = ", ".join(f"{k}={v}" for k, v in self._info.items())
        self.get_logger().info(f"tracker ready: {info}")
        if str(self._info.get("weights", "")).startswith("random"):
            self.get_logger().warning("random weights: outputs are meaningless")

    def _create_publishers(self) -> None:
        s = self._settings
        out_qos = QoSProfile(depth=s.output_qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._pub_masks = self.create_publisher(InstrumentMaskArray, s.masks_topic, out_qos)
        self._pub_classes = (
            self.create_publisher(InstrumentClassArray, s.classes_topic, out_qos) if s.publish_classes else None
        )
        self._pub_label = self.create_publisher(Image, s.label_image_topic, out_qos) if s.publish_label_image else None
        self._pub_overlay = self.create_publisher(Image, s.overlay_topic, out_qos) if s.publish_overlay else None
        self._pub_vocabulary = self.create_publisher(ClassVocabulary, s.class_vocabulary_topic, latched)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _create_inputs(self) -> None:
        s = self._settings
        image_group, control_group, state_group, timer_group = (MutuallyExclusiveCallbackGroup() for _ in range(4))
        if s.image_qos == "sensor_data":
            image_qos = qos_profile_sensor_data
        else:
            image_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        image_type = CompressedImage if s.image_transport == "compressed" else Image
        self.create_subscription(
            image_type,
            s.subscribed_image_topic,
            self._on_image,
            image_qos,
            callback_group=image_group,
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        )
        self.create_subscription(
            Prompt, s.prompt_topic, self._on_prompt_msg, QoSProfile(depth=64), callback_group=control_group
        )
        self.create_service(AddPrompt, "add_prompt", self._on_add_prompt, callback_group=control_group)
        self.create_service(
            RemoveInstrument, "remove_instrument", self._on_remove_instrument, callback_group=control_group
        )
        self.create_service(ResetTracker, "reset", self._on_reset, callback_group=control_group)
        # file I/O in its own group: a slow disk delays neither prompts nor tracking
        self.create_service(SaveState, "save_state", self._on_save_state, callback_group=state_group)
        self.create_service(LoadState, "load_state", self._on_load_state, callback_group=state_group)
        self.create_timer(s.diagnostics_period, self._publish_diagnostics, callback_group=timer_group)

    def _publish_vocabulary(self) -> None:
        header = self._stamped_header()
        trained = bool(self._info.get("semantic_head_trained", False))
        self._pub_vocabulary.publish(vocabulary_msg(self._tracker.class_vocabulary, trained, header))

    # ---- inputs ---------------------------------------------------------------------------

    def _on_image(self, msg) -> None:
        """Convert + validate, then hand over to the worker (never runs the tracker)."""
        received = time.monotonic()
        self._stats.frame_received()
        s = self._settings
        try:
            image = image_msg_to_rgb(msg, (s.max_image_height, s.max_image_width))
        except FrameError as err:
            self._report.report(frame_error_kind(err), str(err))
            return
        if self._frames.put(Frame(image, msg.header, stamp_to_ns(msg.header.stamp), received)):
            self._stats.frame_dropped()

    def _on_prompt_msg(self, msg: Prompt) -> None:
        self._admit_prompt(msg)  # refusals are logged and counted; a topic has no reply

    def _on_add_prompt(self, request: AddPrompt.Request, response: AddPrompt.Response) -> AddPrompt.Response:
        response.accepted, response.reason = self._admit_prompt(request.prompt)
        return response

    def _admit_prompt(self, msg: Prompt) -> tuple[bool, str]:
        """Check a prompt against the image it refers to and queue it; (accepted, reason)."""
        try:
            prompt = prompt_from_msg(msg)
        except PromptError as err:
            return self._refuse("invalid_prompt", str(err))
        stamp = stamp_to_ns(msg.header.stamp)
        target = self._frames.find(stamp)
        image_hw = target.hw if target is not None else self._frames.last_hw
        if image_hw is None:
            return self._refuse("prompt_before_image", "no image received yet")
        if self._label_is_mono8() and prompt.instrument_id > 255:
            return self._refuse(
                "invalid_prompt",
                f"instrument_id {prompt.instrument_id} does not fit the mono8 label image "
                "(ids 1..255; or set label_image_encoding mono16)",
            )
        conflict = self._check_against_queue(prompt)
        if conflict is not None:
            return self._refuse(*conflict)
        try:
            with self._tracker_lock:
                self._tracker.check_prompt(prompt, image_hw)
        except UnknownInstrumentError as err:
            return self._refuse("unknown_instrument", str(err))
        except PromptError as err:
            return self._refuse("invalid_prompt", f"instrument {prompt.instrument_id}: {err}")
        if not self._prompts.push((prompt, stamp)):
            return self._refuse(
                "prompt_queue_full", f"{len(self._prompts)} prompts are already waiting (prompt_queue_size)"
            )
        self._frames.wake()
        return True, ""

    def _refuse(self, kind: str, reason: str) -> tuple[bool, str]:
        self._report.report(kind, reason)
        return False, reason

    def _label_is_mono8(self) -> bool:
        return self._settings.publish_label_image and self._settings.label_image_encoding == "mono8"

    def _pending_new_ids(self) -> set[int]:
        """Ids of queued NEW prompts (instruments about to start)."""
        return {p.instrument_id for p, _ in self._prompts.snapshot() if p.mode == PromptMode.NEW}

    def _check_against_queue(self, prompt: PromptInput) -> Optional[tuple[str, str]]:
        """(kind, reason) when queued NEW prompts already claim this id or the last free slots."""
        if prompt.mode != PromptMode.NEW:
            return None
        pending = self._pending_new_ids()
        if prompt.instrument_id in pending:
            return (
                "invalid_prompt",
                f"a NEW prompt for instrument {prompt.instrument_id} is already waiting for its frame",
            )
        ids = set(self._instrument_ids) | pending
        if prompt.instrument_id not in ids and len(ids) >= self._cfg.max_instruments:
            return "too_many_instruments", (
                f"instrument {prompt.instrument_id} refused: already {len(ids)} instruments "
                f"tracked or starting (max_instruments={self._cfg.max_instruments})"
            )
        return None

    # ---- services -------------------------------------------------------------------------

    def _on_remove_instrument(
        self, request: RemoveInstrument.Request, response: RemoveInstrument.Response
    ) -> RemoveInstrument.Response:
        try:
            with self._tracker_lock:
                self._tracker.remove_instrument(int(request.instrument_id))
                self._instrument_ids = list(self._tracker.instrument_ids)
        except UnknownInstrumentError as err:
            response.success, response.reason = self._refuse("unknown_instrument", str(err))
            return response
        response.success = True
        return response

    def _on_reset(self, request: ResetTracker.Request, response: ResetTracker.Response) -> ResetTracker.Response:
        with self._tracker_lock:
            self._tracker.reset()
            self._generation += 1
            self._instrument_ids = []
            self._prompts.clear()  # prompts accepted before the reset belong to the old state
        self.get_logger().info("tracker reset: every instrument forgotten")
        response.success = True
        return response

    def _on_save_state(self, request: SaveState.Request, response: SaveState.Response) -> SaveState.Response:
        """Snapshot under the lock (cheap), serialise and write atomically without it."""
        try:
            path = self._states.path_for_save(request.name)
            with self._tracker_lock:
                state = self._tracker.export_state()
            tracker_state.save_state(path, state, overwrite=bool(request.overwrite))
        except StateFileError as err:
            response.success, response.reason = self._refuse("state_file", f"save_state refused: {err}")
            return response
        self.get_logger().info(f"tracker state saved to {path} ({len(state['instruments'])} instruments)")
        response.success, response.path = True, path
        return response

    def _on_load_state(self, request: LoadState.Request, response: LoadState.Response) -> LoadState.Response:
        """Read + validate into a new object without the lock; swap it in under the lock."""
        try:
            path = self._states.path_for_load(request.name)
            loaded = self._tracker.read_state(path)
        except StateFileError as err:
            response.success, response.reason = self._refuse(
                "state_file", f"load_state refused (the running state is unchanged): {err}"
            )
            return response
        with self._tracker_lock:
            ids = self._tracker.adopt_state(loaded)
            self._generation += 1
            self._instrument_ids = list(ids)
            self._prompts.clear()
        self.get_logger().info(f"tracker state loaded from {path}: instruments {ids}")
        response.success, response.instrument_ids = True, [int(i) for i in ids]
        return response

    # ---- worker ---------------------------------------------------------------------------

    def _run_worker(self) -> None:
        """Worker thread: the tracking loop, restarted after an unexpected error (bounded)."""
        run_supervised(self._worker_loop, self._stopping, self._on_worker_error, WORKER_RESTART_BACKOFF_S)

    def _worker_loop(self) -> None:
        """Track the newest frame (and frames that stamped prompts refer to) until stopped."""
        while not self._stop.is_set():
            frame = self._frames.take_latest(WORKER_POLL_S)
            with self._tracker_lock:  # atomic with reset / load_state, which void queued prompts
                generation = self._generation
                jobs = self._assign_prompts(frame)
            for target, prompts in jobs:
                if self._stop.is_set():
                    return
                self._process(target, prompts, generation)

    def _stopping(self) -> bool:
        return self._stop.is_set() or not self.context.ok()

    def _on_worker_error(self, err: BaseException, restarts: int) -> bool:
        """Report a worker error; True = restart it, False = it stays stopped (diagnostics ERROR)."""
        reason = self._guard.report("the inference worker", err)
        if restarts < WORKER_MAX_RESTARTS:
            self._stats.worker_restarted()
            self.get_logger().error(
                f"inference worker restarting ({restarts + 1} of at most {WORKER_MAX_RESTARTS}) after: {reason}"
            )
            return True
        self._worker_error = f"{type(err).__name__}: {err}"
        self.get_logger().fatal(f"inference worker stopped for good after {WORKER_MAX_RESTARTS} restarts: {reason}")
        return False

    def _assign_prompts(self, frame: Optional[Frame]) -> list[tuple[Frame, list[PromptInput]]]:
        """Pair pending prompts with frames: a held frame by stamp, else ``frame`` (the next one).

        Returns (frame, prompts) jobs, held frames first (oldest stamp first). While no new
        frame is available, prompts for the next frame stay queued.
        """
        if frame is None:
            pending = self._prompts.pop_if(lambda item: self._frames.find(item[1]) is not None)
        else:
            pending = self._prompts.pop_all()
        held: dict[int, tuple[Frame, list[PromptInput]]] = {}
        for_next: list[PromptInput] = []
        for prompt, stamp in pending:
            target = None if frame is not None and stamp == frame.stamp_ns else self._frames.find(stamp)
            if target is not None:
                held.setdefault(stamp, (target, []))[1].append(prompt)
            else:
                for_next.append(prompt)
        jobs = [held[stamp] for stamp in sorted(held)]
        if frame is not None:
            jobs.append((frame, for_next))
        return jobs

    def _process(self, frame: Frame, prompts: Sequence[PromptInput], generation: int) -> None:
        try:
            with self._tracker_lock:
                if generation != self._generation:
                    prompts = []  # a reset / load_state came in between: these prompts are void
                result = self._tracker.track(frame.image, prompts)
                self._instrument_ids = list(self._tracker.instrument_ids)
        except FrameError as err:
            self._report.report("frame_rejected", str(err))
            return
        for rejected in result.rejected_prompts:
            self._report.report(
                "prompt_rejected_on_frame", f"instrument {rejected.prompt.instrument_id}: {rejected.reason}"
            )
        latency = self._publish_result(frame, result)
        self._stats.frame_processed(latency, len(prompts) - len(result.rejected_prompts))

    def _publish_result(self, frame: Frame, result: FrameResult) -> float:
        """Publish every enabled output with the frame's header; returns the latency (s)."""
        s, header = self._settings, frame.header
        masks = masks_msg(result, header, 0.0, s.publish_masks_images, mask_format=s.mask_format)
        outputs = []
        if self._pub_classes is not None:
            outputs.append((self._pub_classes, classes_msg(result, header)))
        if self._pub_label is not None:
            try:
                outputs.append((self._pub_label, label_image_msg(result, header, s.label_image_encoding)))
            except ValueError as err:
                self._report.report("label_image_overflow", f"label image not published: {err}")
        if self._pub_overlay is not None:
            outputs.append((self._pub_overlay, image_msg(render_overlay(frame.image, result), "rgb8", header)))
        masks.latency = time.monotonic() - frame.received
        self._pub_masks.publish(masks)
        for publisher, msg in outputs:
            publisher.publish(msg)
        return masks.latency

    def _publish_diagnostics(self) -> None:
        snap = self._stats.snapshot()
        rates = self._rates.update(snap)
        msg = diagnostic_array(
            snap,
            rates,
            self._info,
            list(self._instrument_ids),
            f"{self.get_fully_qualified_name()}: tracker",
            self.get_clock().now().to_msg(),
            len(self._prompts),
            self._worker_error,
        )
        self._pub_diagnostics.publish(msg)

    def _stamped_header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg())

    # ---- shutdown -------------------------------------------------------------------------

    def stop(self, timeout: float = WORKER_JOIN_S) -> bool:
        """Stop the worker thread (waits for an in-flight frame); True when it ended."""
        self._stop.set()
        self._frames.close()
        self._worker.join(timeout)
        return not self._worker.is_alive()

    @property
    def tracker(self) -> InstrumentTracker:
        """The tracker (for tests and tools; use under the node's own threads with care)."""
        return self._tracker


def main(args: Optional[list[str]] = None) -> int:
    """Run the node until SIGINT/SIGTERM; 0 on a clean stop, 2 when it cannot start."""
    try:
        rclpy.init(args=args)
    except _rclpy.RCLError as err:  # malformed --ros-args, unreadable --params-file
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: invalid ROS arguments: {err}")
        return EXIT_BAD_CONFIG
    node: Optional[Sam2sNode] = None
    try:
        node = Sam2sNode()
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
        executor.add_node(node)
        executor.spin()
    except (ConfigError, CheckpointError, BackendError) as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {err}")
        return EXIT_BAD_CONFIG
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if not node.stop():
                rclpy.logging.get_logger(NODE_NAME).warning("inference worker did not stop in time")
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
