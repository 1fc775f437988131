"""make-bag -> replay into a sam2s_node process -> eval, on real clips (issue #5).

The node runs in its own process (real DDS between processes, the shared Fast DDS profile),
random weights at a small image_size, so J&F values are meaningless but must be computed.
"""

from __future__ import annotations

import json

import pytest

from sam2s_ros import codec
from sam2s_ros.data import bags, input_bag
from sam2s_ros.evaluation import bag_eval
from sam2s_ros.node import replay
from sam2s_ros.node.process import NodeProcess, ros_env

N_FRAMES = 8


@pytest.fixture(scope="module")
def node(tmp_path_factory, ros_domain_id):
    log = tmp_path_factory.mktemp("node") / "node.log"
    params = {
        "image_topic": input_bag.DEFAULT_IMAGE_TOPIC,
        "image_size": 128,
        "allow_random_weights": True,
        "image_qos": "reliable",
        "publish_overlay": False,
    }
    with NodeProcess(params, log_path=log, env=ros_env(ros_domain_id)) as proc:
        yield proc
        code = proc.stop()
    assert code == 0, proc.log_tail()


@pytest.mark.parametrize(
    "clip, gt_name, storage",
    [
        ("cholecseg8k_clip", "masks_instruments", "mcap"),
        ("davis2016_blackswan", "masks", "sqlite3"),
    ],
)
def test_make_bag_replay_eval_on_real_clips(shared_dir, tmp_path, node, clip, gt_name, storage):
    root = shared_dir / "data" / clip
    in_bag = tmp_path / "in_bag"
    made = input_bag.make_bag(
        input_bag.MakeBagOptions(
            src=root / "frames",
            out=in_bag,
            gt_dir=root / gt_name,
            prompt_type="clicks",
            max_frames=N_FRAMES,
            storage=storage,
        )
    )
    assert made.frames == N_FRAMES
    assert made.prompt_ids
    opt = replay.ReplayOptions(
        bag=in_bag,
        out=tmp_path / "out_bag",
        overlay=tmp_path / "overlay.mp4",
        storage=storage,
        frame_timeout=60,
        node_timeout=120,
        progress=False,
        node_check=node.check_alive,
    )
    summary = replay.replay_bag(opt)
    assert summary.frames_sent == N_FRAMES, node.log_tail()
    assert summary.frames_with_output == N_FRAMES, node.log_tail()

    # every frame processed, stamps and frame_id preserved, prompted instruments present
    sent = [m.msg.header for m in bags.read_messages(in_bag, [input_bag.DEFAULT_IMAGE_TOPIC])]
    outs = [m.msg for m in bags.read_messages(opt.out, ["/sam2s/masks"])]
    by_stamp = {codec.stamp_to_ns(o.header.stamp): o for o in outs}
    assert [codec.stamp_to_ns(h.stamp) for h in sent] == sorted(by_stamp)
    assert all(o.header.frame_id == sent[0].frame_id for o in outs)
    for o in by_stamp.values():
        assert sorted(i.instrument_id for i in o.instruments) == sorted(made.prompt_ids)
        assert (o.image_height, o.image_width) == made.image_hw
        assert all((i.mask.height, i.mask.width) == (i.roi.height, i.roi.width) for i in o.instruments)
    topics = bags.bag_topics(opt.out)
    assert topics["/sam2s/masks"] == "sam2s_ros/msg/InstrumentMaskArray"
    assert topics["/sam2s/label_image"] == "sensor_msgs/msg/Image"
    assert opt.overlay.stat().st_size > 10_000

    report = bag_eval.evaluate(bag_eval.EvalOptions(output_bag=opt.out, gt=in_bag))
    assert report["frames"]["missing_in_output"] == 0
    assert set(map(int, report["instruments"])) == set(made.prompt_ids)
    jf = report["overall"]["JF"]
    assert jf is not None
    assert 0.0 <= jf <= 1.0
    assert report["latency_ms"]["count"] >= N_FRAMES
    json.dumps(report)  # JSON-ready
