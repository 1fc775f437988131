"""Latest-frame slot, frame ring and prompt queue (pure Python, threads)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sam2s_ros.node.frame_buffer import Frame, FrameBuffer, PromptQueue


def _frame(stamp_ns: int, hw=(4, 6)) -> Frame:
    return Frame(np.zeros((*hw, 3), np.uint8), header=None, stamp_ns=stamp_ns, received=time.monotonic())


def test_latest_frame_wins_and_drops_are_counted():
    buf = FrameBuffer(ring_size=3)
    assert buf.put(_frame(1)) is False
    assert buf.put(_frame(2)) is True
    assert buf.put(_frame(3)) is True
    assert buf.dropped == 2
    assert buf.take_latest(0.0).stamp_ns == 3
    assert buf.take_latest(0.0) is None
    assert buf.put(_frame(4)) is False  # slot was empty: not a drop
    assert buf.dropped == 2


def test_ring_is_bounded_and_found_by_stamp():
    buf = FrameBuffer(ring_size=3)
    for s in range(1, 6):
        buf.put(_frame(s))
    assert len(buf) == 3
    assert buf.find(2) is None
    assert buf.find(3).stamp_ns == 3
    assert buf.find(5).stamp_ns == 5
    assert buf.find(0) is None
    buf.put(_frame(0))  # unstamped frames are not held in the ring
    assert len(buf) == 3
    assert buf.find(0) is None
    assert buf.last_hw == (4, 6)


def test_repeated_stamp_replaces_the_older_frame():
    buf = FrameBuffer(ring_size=2)
    buf.put(_frame(1, hw=(2, 2)))
    buf.put(_frame(1, hw=(3, 3)))
    buf.put(_frame(2))
    assert buf.find(1).hw == (3, 3)
    assert len(buf) == 2


def test_ring_size_zero_keeps_nothing():
    buf = FrameBuffer(ring_size=0)
    buf.put(_frame(1))
    assert buf.find(1) is None
    assert len(buf) == 0
    with pytest.raises(ValueError):
        FrameBuffer(-1)


def test_take_waits_for_a_frame_from_another_thread():
    buf = FrameBuffer(ring_size=1)
    threading.Timer(0.05, lambda: buf.put(_frame(9))).start()
    t0 = time.monotonic()
    frame = buf.take_latest(timeout=5.0)
    assert frame.stamp_ns == 9
    assert time.monotonic() - t0 < 2.0


def test_take_times_out_and_wake_and_close_release():
    buf = FrameBuffer(ring_size=1)
    t0 = time.monotonic()
    assert buf.take_latest(timeout=0.05) is None
    assert time.monotonic() - t0 >= 0.04
    threading.Timer(0.05, buf.wake).start()
    t0 = time.monotonic()
    assert buf.take_latest(timeout=5.0) is None
    assert time.monotonic() - t0 < 2.0
    threading.Timer(0.05, buf.close).start()
    t0 = time.monotonic()
    assert buf.take_latest(timeout=5.0) is None
    assert time.monotonic() - t0 < 2.0
    assert buf.take_latest(timeout=5.0) is None  # closed: returns at once


def test_concurrent_producers_and_consumer_stay_bounded():
    buf = FrameBuffer(ring_size=5)
    taken = []
    stop = threading.Event()

    def consume():
        while not stop.is_set():
            f = buf.take_latest(0.01)
            if f is not None:
                taken.append(f.stamp_ns)
                time.sleep(0.002)  # slower than the producers

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [
        threading.Thread(target=lambda k=k: [buf.put(_frame(k * 10_000 + i + 1)) for i in range(2000)])
        for k in range(2)
    ]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    time.sleep(0.05)
    stop.set()
    consumer.join()
    leftover = 1 if buf.take_latest(0.0) is not None else 0
    assert len(buf) == 5
    assert len(taken) + leftover + buf.dropped == 4000  # every frame either taken or counted as dropped
    assert buf.dropped > 0


def test_prompt_queue_bounded_fifo():
    q: PromptQueue[int] = PromptQueue(3)
    assert all(q.push(i) for i in range(3))
    assert q.push(99) is False
    assert len(q) == 3
    assert q.snapshot() == [0, 1, 2]
    assert q.pop_all() == [0, 1, 2]
    assert len(q) == 0
    for i in (1, 2, 3):
        q.push(i)
    assert q.pop_if(lambda i: i % 2 == 1) == [1, 3]
    assert q.snapshot() == [2]
    assert q.pop_if(lambda i: False) == []
    q.push(1)
    q.clear()
    assert q.pop_all() == []
    with pytest.raises(ValueError):
        PromptQueue(0)
