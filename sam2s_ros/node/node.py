"""``sam2s_node``: tracks surgical instruments in an image stream and publishes their masks.

A managed (lifecycle) node: ``configure`` loads the model and builds the tracker,
``activate`` subscribes to images and prompts, starts the inference worker and enables the
outputs, ``deactivate`` stops all that but keeps every instrument's memory, ``cleanup`` frees
the model, ``shutdown`` works from any state. With the ``autostart`` parameter (default true)
the node configures and activates itself at start. Dynamic parameters (``ParamSpec.dynamic``)
are validated in the on-set-parameters callback and applied under the tracker lock, i.e.
between two frames; the others are read-only.

Threads: the image callback only converts and validates a frame and puts it in the
latest-frame slot (:class:`~sam2s_ros.node.frame_buffer.FrameBuffer`); one worker thread runs
the tracker on the newest frame (skipped frames are counted) and publishes the results.
Prompts (topic or service) are checked against the image they refer to, queued, and
applied by the worker: to the frame with the prompt's stamp while it is still in the ring
of recent frames, else to the next processed frame. See docs/node_interface.md.

No callback ends the process: every service, subscription and timer callback (rclpy's
parameter and lifecycle services included) runs inside :class:`~sam2s_ros.node.guard.CallbackGuard`, and
the worker is restarted (at most WORKER_MAX_RESTARTS times within WORKER_RESTART_WINDOW_S) if it raises. State files are
read, validated and written off the tracker lock, inside ``state_dir`` only
(docs/hostile_inputs.md).

Run: ``sam2s_node --ros-args --params-file config/sam2s.yaml``.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Optional, Sequence

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

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
    LifecycleError,
    PromptError,
    StateFileError,
    UnknownInstrumentError,
)
from sam2s_ros.msg import ClassVocabulary, InstrumentClassArray, InstrumentMaskArray, Prompt
from sam2s_ros.node.diagnostics import BadInputReporter, NodeStats, RateMeter, diagnostic_array, frame_error_kind
from sam2s_ros.node.frame_buffer import Frame, FrameBuffer, PromptQueue
from sam2s_ros.node.guard import CallbackGuard, run_supervised
from sam2s_ros.node.parameters import (
    PARAMS_BY_NAME,
    change_refusal,
    declare_parameters,
    inference_threads,
    read_parameters,
    split_changes,
    updated_settings,
)
from sam2s_ros.node.state_store import StateStore
from sam2s_ros.srv import AddPrompt, LoadState, RemoveInstrument, SaveState
from sam2s_ros.tracking import state as tracker_state
from sam2s_ros.tracking.overlay import render_overlay
from sam2s_ros.tracking.tracker import InstrumentTracker
from sam2s_ros.tracking.types import FrameResult, PromptInput, PromptMode

NODE_NAME = "sam2s_node"
EXIT_BAD_CONFIG = 2
WORKER_POLL_S = 0.1  # worker wake-up period when no frame arrives (s)
WORKER_JOIN_S = 30.0  # longest wait for an in-flight track() at shutdown (s)
WORKER_MAX_RESTARTS = 5  # the worker is restarted after an unexpected error at most this often ...
WORKER_RESTART_WINDOW_S = 60.0  # ... within this many seconds (errors spread over a procedure never stop it)
WORKER_RESTART_BACKOFF_S = 1.0
EXECUTOR_THREADS = 5  # image, control, state files, diagnostics timer, rclpy's parameter + lifecycle services
LIFECYCLE_ACTIVE = "active"


class Sam2sNode(LifecycleNode):
    """The ROS face of :class:`InstrumentTracker` (topics, services, diagnostics), a managed node.

    Lifecycle: unconfigured --configure--> inactive (model loaded; services answer)
    --activate--> active (subscriptions, worker, outputs) --deactivate--> inactive (tracker
    state kept) --cleanup--> unconfigured (model freed); shutdown from any state. A failed
    transition is logged with its reason and returns FAILURE (expected errors: bad
    checkpoint, backend) or ERROR (anything else; the node then frees everything and is
    unconfigured again); it never raises.

    Raises (from the constructor): ConfigError (invalid parameters); with ``autostart``
    also LifecycleError (configure or activate failed, e.g. no checkpoint or backend).
    """

    def __init__(self, **kwargs) -> None:
        # Before Node.__init__: it creates rclpy's parameter services through create_service.
        self._stats = NodeStats()
        self._guard = CallbackGuard(self._stats, lambda text: self.get_logger().error(text))
        super().__init__(NODE_NAME, **kwargs)
        for service in self.services:  # rclpy made the lifecycle services without create_service
            if service.srv_type.__module__.startswith("lifecycle_msgs"):
                self._guard.guard_service(service)
        declare_parameters(self)
        self._cfg, self._settings = read_parameters(self)

        s = self._settings
        self._tracker: Optional[InstrumentTracker] = None  # built by configure, freed by cleanup
        self._info: dict = {}  # tracker description (configured)
        self._tracker_lock = threading.Lock()  # the tracker is used by the worker, the services, set_parameters
        self._instrument_ids: list[int] = []
        self._frames = FrameBuffer(s.prompt_frame_buffer_size)
        self._prompts: PromptQueue[tuple[PromptInput, int]] = PromptQueue(s.prompt_queue_size)
        self._states = StateStore(s.state_dir)
        self._report = BadInputReporter(self._stats, self.get_logger().warning)
        self._rates = RateMeter()
        self._worker_error: Optional[str] = None
        self._generation = 0  # bumped by reset / load_state: prompts taken before belong to the old state
        self._stop = threading.Event()  # the running worker's stop flag (a new one per activation)
        self._worker: Optional[threading.Thread] = None
        self._inputs: list = []  # image + prompt subscriptions while active

        self._create_publishers()
        self._create_services()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if s.autostart:
            try:
                self._autostart()
            except BaseException:
                # the caller never gets this node: destroy it now, before rclpy shuts down
                # (a lifecycle node finalised after its context ends the process's logging,
                # see destroy_node; a failed start was once seen not to exit within 90 s)
                self.stop()
                self.destroy_node()
                raise

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

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state: unconfigured, inactive, active, finalized, ..."""
        try:
            return str(self._state_machine.current_state[1])
        except Exception:  # noqa: BLE001 (diagnostics must not fail on it)
            return "unknown"

    def _autostart(self) -> None:
        """configure + activate now (``autostart``); raises LifecycleError when either fails."""
        for name, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
            if trigger() != TransitionCallbackReturn.SUCCESS:
                err = self._transition_error
                if isinstance(err, (ConfigError, CheckpointError, BackendError)):
                    raise err
                raise LifecycleError(f"autostart: {name} failed: {err or 'see the log'}")

    def _transition(self, name: str, action) -> TransitionCallbackReturn:
        """Run one transition's work: SUCCESS, FAILURE (expected error) or ERROR; never raises."""
        self._transition_error = None
        try:
            action()
        except (ConfigError, CheckpointError, BackendError) as err:
            self._transition_error = err
            self.get_logger().error(f"lifecycle {name} failed: {err}")
            return TransitionCallbackReturn.FAILURE
        except Exception as err:  # noqa: BLE001 (a transition must not raise into rclpy, which hides it)
            self._transition_error = err
            self._guard.report(f"lifecycle transition {name}", err)
            return TransitionCallbackReturn.ERROR
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and build the tracker (seconds; minutes for a first TensorRT build)."""
        return self._transition("configure", self._configure)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the outputs, subscribe to images and prompts, start the inference worker."""

        def activate() -> None:
            super(Sam2sNode, self).on_activate(state)  # lifecycle publishers publish from now on
            try:
                self._start_processing()
            except BaseException:
                self._stop_processing()
                super(Sam2sNode, self).on_deactivate(state)
                raise

        return self._transition("activate", activate)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop the worker (after its frame), disable the outputs; keep the tracker state."""

        def deactivate() -> None:
            self._stop_processing()
            super(Sam2sNode, self).on_deactivate(state)
            self.get_logger().info(
                f"deactivated: not tracking; instruments {list(self._instrument_ids)} kept for activate"
            )

        return self._transition("deactivate", deactivate)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Forget the instruments and free the model."""
        return self._transition("cleanup", self._free_tracker)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: stop processing and free the model."""
        return self._transition("shutdown", lambda: self._release_all(state))

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After a transition raised: free everything, back to unconfigured."""
        self.get_logger().error(f"lifecycle error processing (from {state.label}): freeing the tracker")
        try:
            self._release_all(state)
        except Exception as err:  # noqa: BLE001
            self._guard.report("lifecycle error processing", err)
            return TransitionCallbackReturn.ERROR  # -> finalized
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        torch.set_num_threads(inference_threads(self._settings.num_threads))  # process-wide; onnxruntime follows it
        tracker = InstrumentTracker.from_config(self._cfg)
        backend_info = getattr(getattr(tracker, "backend", None), "describe", dict)()  # graph backends
        with self._tracker_lock:
            self._tracker = tracker
            self._info = {**tracker.describe(), **backend_info, "cpu_threads": torch.get_num_threads()}
            self._instrument_ids = list(tracker.instrument_ids)
        self._log_startup()

    def _start_processing(self) -> None:
        s = self._settings
        image_group, prompt_group = MutuallyExclusiveCallbackGroup(), self._control_group
        if s.image_qos == "sensor_data":
            image_qos = qos_profile_sensor_data
        else:
            image_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        image_type = CompressedImage if s.image_transport == "compressed" else Image
        self._frames.take_latest(0.0)  # a frame left from before a deactivate is stale
        self._inputs.append(
            self.create_subscription(
                image_type,
                s.subscribed_image_topic,
                self._on_image,
                image_qos,
                callback_group=image_group,
                qos_overriding_options=QoSOverridingOptions.with_default_policies(),
            )
        )
        self._inputs.append(
            self.create_subscription(
                Prompt, s.prompt_topic, self._on_prompt_msg, QoSProfile(depth=64), callback_group=prompt_group
            )
        )
        self._worker_error = None
        self._stop = threading.Event()
        stop = self._stop
        self._worker = threading.Thread(target=self._run_worker, args=(stop,), name="sam2s_inference", daemon=True)
        self._worker.start()
        self._publish_vocabulary()

    def _stop_processing(self, timeout: float = WORKER_JOIN_S) -> bool:
        """Remove the subscriptions and stop the worker; True when it ended within ``timeout``."""
        inputs, self._inputs = self._inputs, []
        for subscription in inputs:
            self.destroy_subscription(subscription)
        self._stop.set()
        self._frames.wake()
        worker = self._worker
        if worker is None or worker is threading.current_thread():
            return True
        worker.join(timeout)
        if worker.is_alive():
            self.get_logger().warning(f"inference worker did not stop within {timeout:.0f} s")
            return False
        self._worker = None
        return True

    def _free_tracker(self) -> None:
        with self._tracker_lock:
            tracker, self._tracker = self._tracker, None
            self._info = {}
            self._instrument_ids = []
            self._generation += 1
            self._prompts.clear()
        self._frames = FrameBuffer(self._settings.prompt_frame_buffer_size)
        if tracker is None:
            return
        del tracker
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.get_logger().info("cleaned up: tracker and model freed")

    def _release_all(self, state: LifecycleState) -> None:
        self._stop_processing()
        super().on_deactivate(state)  # every lifecycle publisher off
        self._free_tracker()

    # ---- parameters -----------------------------------------------------------------------

    def set_parameters_atomically(self, parameter_list):
        """rclpy's set_parameters_atomically, with this node's refusals checked first.

        rclpy checks a descriptor's ``read_only``, type and range before any on-set callback,
        with reasons that name neither the parameter nor what to do ("Wrong parameter type,
        expected '3' got '4'"); :func:`change_refusal` gives READ_ONLY_REASON, "wrong type:
        expected a double", "out of range", "not a finite number" instead. Undeclared names
        still raise ParameterNotDeclaredException (the parameter services report it).
        """
        for param in parameter_list:
            reason = change_refusal(param.name, param.value)
            if reason is not None:
                return self._refuse_parameter(reason)
        return super().set_parameters_atomically(parameter_list)

    def set_parameters(self, parameter_list):
        """rclpy's set_parameters (one result per parameter) through set_parameters_atomically."""
        return [self.set_parameters_atomically([param]) for param in parameter_list]

    def _on_set_parameters(self, params) -> SetParametersResult:
        """On-set-parameters callback: validate changes and apply them between two frames (all or none).

        Also reached by rclpy's own declarations (qos_overrides.*), which are passed through.
        """
        changes = {}
        for param in params:
            reason = change_refusal(param.name, param.value)
            if reason is not None:
                return self._refuse_parameter(reason)
            if param.name in PARAMS_BY_NAME:  # not rclpy's own (qos_overrides.*, use_sim_time)
                changes[param.name] = param.value
        if not changes:
            return SetParametersResult(successful=True)
        tracker_changes, node_changes = split_changes(changes)
        try:
            with self._tracker_lock:  # the worker tracks under this lock: the next frame sees all changes
                if tracker_changes:
                    self._cfg.update(tracker_changes)  # the tracker's own config object
                if node_changes:
                    self._settings = updated_settings(self._settings, node_changes)
        except ConfigError as err:
            return self._refuse_parameter(f"refused: {err}")
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def _refuse_parameter(self, reason: str) -> SetParametersResult:
        self._report.report("invalid_parameter", reason)
        return SetParametersResult(successful=False, reason=reason)

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
        # Lifecycle publishers: they publish only while the node is active. All outputs exist
        # from the start, so that the publish_* parameters can switch them at run time.
        self._pub_masks = self.create_lifecycle_publisher(InstrumentMaskArray, s.masks_topic, out_qos)
        self._pub_classes = self.create_lifecycle_publisher(InstrumentClassArray, s.classes_topic, out_qos)
        self._pub_label = self.create_lifecycle_publisher(Image, s.label_image_topic, out_qos)
        self._pub_overlay = self.create_lifecycle_publisher(Image, s.overlay_topic, out_qos)
        self._pub_vocabulary = self.create_lifecycle_publisher(ClassVocabulary, s.class_vocabulary_topic, latched)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)  # in every state

    def _create_services(self) -> None:
        """Services and the diagnostics timer, in every state (they refuse while unconfigured)."""
        s = self._settings
        self._control_group = MutuallyExclusiveCallbackGroup()  # prompts (topic + service) and tracker services
        control_group, state_group, timer_group = (
            self._control_group,
            *(MutuallyExclusiveCallbackGroup() for _ in range(2)),
        )
        self.create_service(AddPrompt, "add_prompt", self._on_add_prompt, callback_group=control_group)
        self.create_service(
            RemoveInstrument, "remove_instrument", self._on_remove_instrument, callback_group=control_group
        )
        self.create_service(Trigger, "reset", self._on_reset, callback_group=control_group)
        # file I/O in its own group: a slow disk delays neither prompts nor tracking
        self.create_service(SaveState, "save_state", self._on_save_state, callback_group=state_group)
        self.create_service(LoadState, "load_state", self._on_load_state, callback_group=state_group)
        self.create_timer(s.diagnostics_period, self._publish_diagnostics, callback_group=timer_group)

    def _publish_vocabulary(self) -> None:
        header = self._stamped_header()
        trained = bool(self._info.get("semantic_head_trained", False))
        self._pub_vocabulary.publish(vocabulary_msg(self._tracker.class_vocabulary, trained, header))

    def _not_configured(self) -> Optional[tuple[bool, str]]:
        """(False, reason) counted as ``not_configured`` while there is no tracker, else None."""
        if self._tracker is not None:
            return None
        return self._refuse(
            "not_configured", f"sam2s_node is {self.lifecycle_state}: configure it first (lifecycle change_state)"
        )

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
        refusal = self._not_configured()
        if refusal is not None:
            return refusal
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
                refusal = self._not_configured()
                if refusal is not None:
                    return refusal
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
                refusal = self._not_configured()
                if refusal is not None:
                    response.success, response.reason = refusal
                    return response
                self._tracker.remove_instrument(int(request.instrument_id))
                self._instrument_ids = list(self._tracker.instrument_ids)
        except UnknownInstrumentError as err:
            response.success, response.reason = self._refuse("unknown_instrument", str(err))
            return response
        response.success = True
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._tracker_lock:
            refusal = self._not_configured()
            if refusal is not None:
                response.success, response.message = refusal
                return response
            forgotten = list(self._tracker.instrument_ids)
            self._tracker.reset()
            self._generation += 1
            self._instrument_ids = []
            self._prompts.clear()  # prompts accepted before the reset belong to the old state
        response.success = True
        response.message = f"tracker reset: every instrument forgotten ({len(forgotten)}: {forgotten})"
        self.get_logger().info(response.message)
        return response

    def _on_save_state(self, request: SaveState.Request, response: SaveState.Response) -> SaveState.Response:
        """Snapshot under the lock (cheap), serialise and write atomically without it."""
        try:
            path = self._states.path_for_save(request.name)
            with self._tracker_lock:
                refusal = self._not_configured()
                if refusal is not None:
                    response.success, response.reason = refusal
                    return response
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
        tracker = self._tracker
        refusal = self._not_configured()
        if tracker is None or refusal is not None:
            response.success, response.reason = refusal or (False, "not configured")
            return response
        try:
            path = self._states.path_for_load(request.name)
            loaded = tracker.read_state(path)
        except StateFileError as err:
            response.success, response.reason = self._refuse(
                "state_file", f"load_state refused (the running state is unchanged): {err}"
            )
            return response
        with self._tracker_lock:
            if self._tracker is not tracker:  # cleaned up (or configured again) meanwhile
                response.success, response.reason = self._refuse(
                    "not_configured", "load_state refused: the tracker was cleaned up meanwhile"
                )
                return response
            ids = self._tracker.adopt_state(loaded)
            self._generation += 1
            self._instrument_ids = list(ids)
            self._prompts.clear()
        self.get_logger().info(f"tracker state loaded from {path}: instruments {ids}")
        response.success, response.instrument_ids = True, [int(i) for i in ids]
        return response

    # ---- worker ---------------------------------------------------------------------------

    def _run_worker(self, stop: threading.Event) -> None:
        """Worker thread (one per activation): the tracking loop, restarted after an unexpected error (bounded)."""
        run_supervised(
            lambda: self._worker_loop(stop),
            lambda: stop.is_set() or not self.context.ok(),
            self._on_worker_error,
            WORKER_RESTART_BACKOFF_S,
            WORKER_RESTART_WINDOW_S,
        )

    def _worker_loop(self, stop: threading.Event) -> None:
        """Track the newest frame (and frames that stamped prompts refer to) until ``stop`` is set."""
        while not stop.is_set():
            frame = self._frames.take_latest(WORKER_POLL_S)
            if stop.is_set():
                return  # deactivated while waiting: the frame is not tracked
            with self._tracker_lock:  # atomic with reset / load_state, which void queued prompts
                generation = self._generation
                jobs = self._assign_prompts(frame)
            for target, prompts in jobs:
                if stop.is_set():
                    return
                self._process(target, prompts, generation)

    def _on_worker_error(self, err: BaseException, restarts: int) -> bool:
        """Report a worker error; True = restart it, False = it stays stopped (diagnostics ERROR)."""
        reason = self._guard.report("the inference worker", err)
        if restarts < WORKER_MAX_RESTARTS:
            self._stats.worker_restarted()
            self.get_logger().error(
                f"inference worker restarting ({restarts + 1} of at most {WORKER_MAX_RESTARTS} within "
                f"{WORKER_RESTART_WINDOW_S:.0f} s) after: {reason}"
            )
            return True
        self._worker_error = f"{type(err).__name__}: {err}"
        self.get_logger().fatal(
            f"inference worker stopped for good after {WORKER_MAX_RESTARTS} restarts within "
            f"{WORKER_RESTART_WINDOW_S:.0f} s: {reason}"
        )
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
            with self._tracker_lock:  # dynamic parameter changes wait for this: they apply between frames
                if self._tracker is None:
                    return  # cleaned up
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
        if s.publish_classes:
            outputs.append((self._pub_classes, classes_msg(result, header)))
        if s.publish_label_image:
            try:
                outputs.append((self._pub_label, label_image_msg(result, header, s.label_image_encoding)))
            except ValueError as err:
                self._report.report("label_image_overflow", f"label image not published: {err}")
        if s.publish_overlay:
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
            self.lifecycle_state,
        )
        self._pub_diagnostics.publish(msg)

    def _stamped_header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg())

    # ---- shutdown -------------------------------------------------------------------------

    def stop(self, timeout: float = WORKER_JOIN_S) -> bool:
        """Stop processing for good before destroy_node (waits for an in-flight frame); True when it ended.

        No lifecycle transition: the process is ending (SIGINT / SIGTERM, tests).
        """
        stopped = self._stop_processing(timeout)
        self._frames.close()
        return stopped

    def destroy_node(self) -> None:
        """LifecycleNode.destroy_node, which also destroys the lifecycle state machine.

        rclpy's LifecycleNode leaves its state machine alive, and the state machine holds the
        rcl node: without this the node is only finalised when Python collects the object,
        possibly after its context was shut down, and that late finalisation ends the
        process-wide logging of the nodes that run then (their log lines vanish, also from
        /rosout).
        """
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()

    @property
    def tracker(self) -> Optional[InstrumentTracker]:
        """The tracker while configured, else None (for tests and tools; use with care)."""
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
    except (ConfigError, CheckpointError, BackendError, LifecycleError) as err:
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
