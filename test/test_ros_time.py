"""Time in the node: episode time from stamps that jump, sim time, latency that means something."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_helpers import (
    StandInMonitor,
    image,
    linked,
    make_node,
    probe,
    publish_in_turn,
    wait,
)

from tcc_ros.monitor_node.stamps import EpisodeClock


def _times(stamps, **kwargs) -> tuple[list[float], int]:
    clock = EpisodeClock(**kwargs)
    times = [clock.update(s)[0] for s in stamps]
    return times, clock.jumps


def test_regular_stamps_give_their_own_spacing() -> None:
    stamps = 1000.0 + np.arange(50) / 12.0
    times, jumps = _times(stamps)
    assert jumps == 0
    np.testing.assert_allclose(times, stamps - stamps[0], atol=1e-9)


@pytest.mark.parametrize(
    "glitch",
    [
        lambda s: s + 3600.0,  # one stamp from the far future
        lambda s: s - 50.0,  # one stamp from the past
        lambda s: s - 1 / 12,  # a duplicate of the previous stamp
        lambda s: float("nan"),  # garbage
    ],
)
def test_a_single_bad_stamp_costs_one_jump_and_no_time(glitch) -> None:
    stamps = list(np.arange(40) / 12.0)
    regular, _ = _times(stamps)
    stamps[20] = glitch(stamps[20])
    times, jumps = _times(stamps)
    assert jumps == 1
    np.testing.assert_allclose(times, regular, atol=1e-9)
    assert all(b > a for a, b in zip(times, times[1:]))


def test_a_lasting_clock_change_costs_one_jump() -> None:
    stamps = np.arange(60) / 10.0
    stamps[30:] += 1e6  # the clock was re-synchronised
    times, jumps = _times(stamps)
    assert jumps == 1
    np.testing.assert_allclose(np.diff(times), 0.1, atol=1e-6)


def test_long_real_gaps_within_the_limit_are_kept() -> None:
    times, jumps = _times([0.0, 0.1, 3.1, 3.2], max_gap_s=5.0)
    assert jumps == 0 and times[2] == pytest.approx(3.1)


# ------------------------------------------------------------------------------------------------
# The real streaming monitor: same alarms with regular and with jumping stamps
# ------------------------------------------------------------------------------------------------
DIM = 8


def _path(s: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(5)
    amp, phase = rng.normal(size=(4, DIM)), rng.uniform(0, 6.3, size=(4, DIM))
    freq = np.arange(1, 5)[:, None]
    return np.sum(amp * np.sin(np.pi * freq * s[:, None, None] + phase), axis=1).astype(np.float32)


def _monitor():
    from tcc_model.stream import MonitorConfig, ProgressMonitor, ReferenceSet

    s = np.linspace(0, 1, 100)
    phases = np.minimum((s * 3).astype(int), 2)
    refs = ReferenceSet.from_episodes(
        [_path(s)],
        [phases],
        ["a", "b", "c"],
        [{"b": int(np.argmax(phases == 1)), "c": int(np.argmax(phases == 2))}],
        "bundle",
        ["r0"],
        10.0,
    )
    config = MonitorConfig(detectors=("progress_stall",), stall_seconds=2.0, temperature=0.5)
    return ProgressMonitor(refs, config=config)


def _alarms(monitor, embeddings, times) -> list[str]:
    monitor.reset()
    return [monitor.process_embedding(e, t).anomaly_kind for e, t in zip(embeddings, times)]


def test_jumping_stamps_raise_the_same_alarms_as_regular_ones() -> None:
    s = np.concatenate([np.linspace(0, 0.5, 50), np.full(40, 0.5), np.linspace(0.5, 1, 50)])
    rng = np.random.default_rng(0)
    embeddings = _path(s) + rng.normal(scale=0.01, size=(len(s), DIM)).astype(np.float32)
    stamps = 500.0 + np.arange(len(s)) / 10.0
    jumping = stamps.copy()
    jumping[10] += 3600.0  # far future
    jumping[30] -= 100.0  # backwards
    jumping[60] = jumping[59]  # duplicated, during the pause
    jumping[95] += 7200.0  # far future, right after the pause
    monitor = _monitor()
    regular = _alarms(monitor, embeddings, _times(stamps)[0])
    assert "stalled" in regular, "the 4 s pause must raise a stall alarm"
    assert not any(regular[:55]), "no alarm before the pause"
    times, jumps = _times(jumping)
    assert jumps == 4
    assert _alarms(monitor, embeddings, times) == regular
    # what the clock protects against: the raw stamps raise a different set of alarms
    assert _alarms(monitor, embeddings, jumping - jumping[0]) != regular


# ------------------------------------------------------------------------------------------------
# The node: stamp jumps counted on /diagnostics, sim time, latency
# ------------------------------------------------------------------------------------------------
@pytest.mark.ros
def test_node_counts_stamp_jumps_and_gives_the_monitor_a_steady_clock(ros_graph) -> None:
    monitor = StandInMonitor()
    node, _ = make_node(ros_graph, monitor, **{"qos.reliability": "reliable", "qos.depth": 10})
    _, pub, got = probe(ros_graph)
    assert wait(lambda: linked(node, pub))
    time.sleep(0.3)
    secs = [100, 101, 102, 9_000_000, 104, 104, 106]
    publish_in_turn(node, pub, [image(10 * i, sec, nanosec=0) for i, sec in enumerate(secs)])
    assert wait(lambda: len(got.phase) == len(secs), 10)
    assert [m.header.stamp.sec for m in got.phase] == secs  # outputs keep the image stamps
    assert monitor.times == pytest.approx([0, 1, 2, 3, 4, 5, 6])
    assert wait(lambda: got.diag and got.diag[-1].status[0].values, 5)
    assert wait(
        lambda: {kv.key: kv.value for kv in got.diag[-1].status[0].values}["stamp_jumps"] == "2",
        5,
    )


@pytest.mark.ros
def test_node_runs_on_sim_time_and_measures_latency_on_the_steady_clock(ros_graph) -> None:
    from builtin_interfaces.msg import Time
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock

    monitor = StandInMonitor()
    node, _ = make_node(
        ros_graph, monitor, use_sim_time=True, **{"qos.reliability": "reliable", "qos.depth": 10}
    )
    _, pub, got = probe(ros_graph)
    # no /clock yet: the diagnostics timer runs on the steady clock and still reports
    assert wait(lambda: len(got.diag) >= 2, 10), "no /diagnostics under use_sim_time"
    clock_node = Node("bag_clock", context=ros_graph.ctx)
    ros_graph.nodes.append(clock_node)
    clock_pub = clock_node.create_publisher(Clock, "/clock", 10)
    assert wait(lambda: clock_pub.get_subscription_count() > 0, 10)
    assert wait(lambda: linked(node, pub))
    for i in range(5):  # a bag replay: stamps and /clock from 2019
        sec = 1_560_000_000 + i
        clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=50_000_000)))
        time.sleep(0.05)
        publish_in_turn(node, pub, [image(20, sec, nanosec=0)])
    assert wait(lambda: len(got.phase) == 5, 10)
    assert wait(lambda: got.diag[-1].header.stamp.sec >= 1_560_000_000, 5), (
        "diagnostics use sim time"
    )
    values = {kv.key: kv.value for kv in got.diag[-1].status[0].values}
    # latency: the node's own processing time (steady clock), not wall clock minus a 2019 stamp
    assert 0.0 <= float(values["latency_p99_ms"]) < 1000.0, values
    # stamp age on the sim clock: about the 50 ms between the /clock tick and the frame
    assert 0.0 <= float(values["stamp_age_p50_ms"]) < 1000.0, values
    assert values["stamp_jumps"] == "0"
