"""sam2s_ros.node.diagnostics: bad-input reporter, latency percentiles, the /diagnostics message."""

from __future__ import annotations

import numpy as np
import pytest

from sam2s_ros.node import diagnostics as nd


def test_reporter_counts_every_input_and_throttles_identical_logs(monkeypatch):

    clock = [100.0]
    monkeypatch.setattr(nd.time, "monotonic", lambda: clock[0])
    stats, lines = nd.NodeStats(), []
    reporter = nd.BadInputReporter(stats, lines.append, period_s=10.0, max_keys=2)
    for _ in range(3):
        reporter.report("invalid_prompt", "NaN point")
    reporter.report("invalid_prompt", "outside")  # another reason: logged at once
    clock[0] += 11.0
    reporter.report("invalid_prompt", "NaN point")
    assert lines == [
        "bad input [invalid_prompt]: NaN point",
        "bad input [invalid_prompt]: outside",
        "bad input [invalid_prompt]: NaN point (2 identical since last report)",
    ]
    snap = stats.snapshot()
    assert snap.bad_input["invalid_prompt"] == 5
    assert snap.last_reasons["invalid_prompt"] == "NaN point"
    assert set(snap.bad_input) == set(nd.BAD_INPUT_KINDS)


def test_latency_percentiles_and_diagnostic_array():

    assert nd.latency_percentiles_ms(np.array([])) == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    lat = nd.latency_percentiles_ms(np.arange(1, 101) / 1000.0)
    assert lat["p50"] == pytest.approx(50.5)
    assert lat["max"] == pytest.approx(100.0)
    stats = nd.NodeStats()
    stats.frame_received()
    stats.frame_processed(0.02, prompts_applied=1)
    info = {"backend": "torch", "model": "m", "image_size": 256, "device": "cpu", "weights": "random weights"}
    msg = nd.diagnostic_array(
        stats.snapshot(), {"input": 1.0, "processed": 1.0}, info, [3], "/x/sam2s_node: tracker", None
    )
    [status] = msg.status
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == nd.DiagnosticStatus.WARN
    assert "random weights" in status.message
    assert values["instrument_ids"] == "3"
    assert values["frames_processed"] == "1"
    assert values["latency_p50_ms"] == "20.0"
    assert float(values["resident_memory_mb"]) > 10
