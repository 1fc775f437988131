"""The rclpy side of ``sam2s replay``: publishers into a node, raw subscriptions to its outputs.

Uses its own rclpy context, so it can run inside a process that also uses rclpy.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from typing import Callable, Optional, Sequence

from sam2s_ros.codec import CLASS_ARRAY_TYPE, IMAGE_TYPE, MASK_ARRAY_TYPE, copy_header, prompt_msg, stamp_to_ns
from sam2s_ros.errors import BagError

#: most masks messages kept by stamp (older ones are dropped)
MAX_KEPT_OUTPUTS = 256


class RosSession:
    """Publishers to a sam2s_node and raw recorders of its outputs (context manager).

    Args:
        namespace: the node's namespace ("/sam2s").
        image_topic: topic the frames are published on (the node must subscribe to it).
        prompt_topic: topic for prompts (None: ``<namespace>/prompts``).
        outputs: (topic relative to the namespace, type name) pairs to record.
    """

    def __init__(
        self, namespace: str, image_topic: str, prompt_topic: Optional[str], outputs: Sequence[tuple[str, str]]
    ):
        self.namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.image_topic = image_topic
        self.prompt_topic = prompt_topic or f"{self.namespace}/prompts"
        self.outputs = list(outputs)
        self.on_output: Optional[Callable[[str, bytes, int], None]] = None
        self.masks_by_stamp: "OrderedDict[int, object]" = OrderedDict()
        self.vocabulary = None

    def output_topic(self, rel: str) -> str:
        return f"{self.namespace}/{rel}"

    def __enter__(self) -> "RosSession":
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image

        from sam2s_ros.msg import ClassVocabulary, InstrumentClassArray, InstrumentMaskArray, Prompt

        self._deserialize = deserialize_message
        self._types = {MASK_ARRAY_TYPE: InstrumentMaskArray, CLASS_ARRAY_TYPE: InstrumentClassArray, IMAGE_TYPE: Image}
        self._Prompt = Prompt
        self._Masks = InstrumentMaskArray
        self._ctx = rclpy.Context()
        rclpy.init(context=self._ctx)
        self.node = rclpy.create_node("sam2s_replay", context=self._ctx, start_parameter_services=False)
        self._executor = SingleThreadedExecutor(context=self._ctx)
        self._executor.add_node(self.node)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self._pub_image = self.node.create_publisher(Image, self.image_topic, QoSProfile(depth=10))
        self._pub_prompt = self.node.create_publisher(Prompt, self.prompt_topic, reliable)
        self._subs = []
        for rel, type_name in self.outputs:
            topic = self.output_topic(rel)
            cb = functools.partial(self._on_output, topic, type_name)
            self._subs.append(self.node.create_subscription(self._types[type_name], topic, cb, reliable, raw=True))
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._subs.append(
            self.node.create_subscription(
                ClassVocabulary, self.output_topic("class_vocabulary"), self._on_vocabulary, latched
            )
        )
        return self

    def __exit__(self, *exc) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        self._ctx.try_shutdown()

    # ---- callbacks ---------------------------------------------------------------------
    def _on_vocabulary(self, msg) -> None:
        self.vocabulary = msg

    def _on_output(self, topic: str, type_name: str, raw: bytes) -> None:
        if self.on_output is not None:
            self.on_output(topic, raw, time.time_ns())
        if type_name == MASK_ARRAY_TYPE:
            msg = self._deserialize(raw, self._Masks)
            stamp = stamp_to_ns(msg.header.stamp)
            self.masks_by_stamp[stamp] = msg
            self.masks_by_stamp.move_to_end(stamp)
            while len(self.masks_by_stamp) > MAX_KEPT_OUTPUTS:
                self.masks_by_stamp.popitem(last=False)

    # ---- actions -----------------------------------------------------------------------
    def spin_until(self, deadline: float) -> None:
        """Process callbacks until the monotonic time ``deadline``."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._executor.spin_once(timeout_sec=min(left, 0.05))

    def wait_for_node(self, timeout: float, check: Optional[Callable[[], None]] = None) -> None:
        """Wait until the node published its vocabulary and subscribes to our topics.

        Args:
            timeout: seconds.
            check: called while waiting; may raise to stop waiting (e.g. the node died).

        Raises:
            BagError: the node did not come up within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check is not None:
                check()
            self._executor.spin_once(timeout_sec=0.1)
            if (
                self.vocabulary is not None
                and self._pub_image.get_subscription_count() > 0
                and self._pub_prompt.get_subscription_count() > 0
                and self._subs[0].get_publisher_count() > 0
            ):
                return
        raise BagError(
            f"no sam2s_node answered within {timeout:.0f} s: expected it to subscribe to "
            f"{self.image_topic} and {self.prompt_topic} and publish {self.output_topic('masks')} "
            f"(same ROS_DOMAIN_ID? node log?)"
        )

    def publish_image(self, raw: bytes) -> None:
        self._pub_image.publish(raw)

    def publish_prompts(self, raws: Sequence[bytes]) -> list[int]:
        """Publish stored Prompt CDR bytes; returns their instrument ids."""
        ids = []
        for raw in raws:
            ids.append(int(self._deserialize(raw, self._Prompt).instrument_id))
            self._pub_prompt.publish(raw)
        return ids

    def publish_prompt_inputs(self, prompts, header) -> list[int]:
        """Publish PromptInputs stamped with ``header`` (a rosbags or rclpy Header)."""
        h = copy_header(header)
        for p in prompts:
            self._pub_prompt.publish(prompt_msg(p, h))
        return [int(p.instrument_id) for p in prompts]

    def wait_for_masks(self, stamp: int, timeout: float, done: Callable) -> Optional[object]:
        """Spin until a masks message with header stamp ``stamp`` (ns) satisfies ``done``.

        Returns:
            the message, or None after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.masks_by_stamp.get(stamp)
            if done(msg):
                return msg
            self._executor.spin_once(timeout_sec=0.05)
        msg = self.masks_by_stamp.get(stamp)
        return msg if done(msg) else None
