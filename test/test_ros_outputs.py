"""The node's per-frame messages built from the stream's FrameResult (no ROS graph needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("tcc_ros.msg", reason="build the messages first (make env)")

from std_msgs.msg import Header  # noqa: E402
from tcc_ros.msg import TaskPhase  # noqa: E402

from tcc_model.stream import FrameResult  # noqa: E402
from tcc_ros.monitor_node.outputs import BundleInfo, frame_messages  # noqa: E402

pytestmark = pytest.mark.ros


def test_phase_message_carries_every_phase_probability() -> None:
    info = BundleInfo(phase_names=["a", "b", "c"], reference_ids=["r0"], reference_lengths=[10])
    result = FrameResult(
        frame_index=3,
        valid=True,
        progress=0.4,
        progress_std=0.01,
        reference_id="r0",
        reference_frame=4,
        phase_id=1,
        phase_confidence=0.7,
        phase_probabilities=(0.2, 0.7, 0.1),
        phase_progress=0.5,
        distance=0.3,
        anomaly_score=0.1,
    )
    phase = frame_messages(Header(), result, info)["phase"]
    assert phase.id == 1 and list(phase.probabilities) == pytest.approx([0.2, 0.7, 0.1])
    invalid = frame_messages(Header(), FrameResult(frame_index=4, valid=False), info)["phase"]
    assert invalid.id == TaskPhase.UNKNOWN and len(invalid.probabilities) == 0
