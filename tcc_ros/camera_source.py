"""ROS 2 node: a camera replayed from a video, a dataset, a rosbag or the live pouring simulator.

Publishes ``sensor_msgs/Image`` (or ``CompressedImage``) at a fixed rate, and, for labelled
sources, ``tcc_ros/GroundTruth`` on ``/tcc/ground_truth`` with the **same** ``header.stamp`` as
the image. Between episodes it calls the monitor's ``reset`` service (``tcc_ros/srv/ResetEpisode``,
``/tcc/reset`` by default). At the end of the stream it exits (or starts over with ``--loop``).
A source that cannot be read (missing video, unknown dataset) fails before anything waits for
subscribers.

Examples::

    python -m tcc_ros.camera_source --dataset sim_pouring --split test --episodes 3 --rate 12
    python -m tcc_ros.camera_source --sim --episodes 2 --anomaly drop --rate 12
    python -m tcc_ros.camera_source --video demo.mp4 --rate 30 --size 224
    python -m tcc_ros.camera_source --bag recording/ --bag-topic /camera/image_raw
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tcc_model.errors import DatasetError
from tcc_ros.camera_episodes import (  # re-exported: the sources belong to this command
    ANOMALY_KINDS,
    SourceEpisode,
    bag_episode,
    dataset_episodes,
    sim_episodes,
    video_episode,
)


def ground_truth_qos() -> Any:
    """QoS of ``ground_truth``: reliable and transient local with a deep history, so a scoring
    console that matches late (a loaded machine) still gets every frame's truth."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=2000,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def _truthy(text: str) -> bool:
    """``true``/``false`` (any case, also 1/0, yes/no) as given by a launch argument."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_source_options(p: argparse.ArgumentParser) -> None:
    """Options choosing what the source replays: split, episodes, seed, anomaly, rate, size."""
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument(
        "--episodes", type=int, default=None, help="number of episodes (default all; sim: 1)"
    )
    p.add_argument("--seed", type=int, default=0, help="first simulator seed")
    p.add_argument("--anomaly", choices=ANOMALY_KINDS, default=None, help="simulated anomaly")
    p.add_argument("--bag-topic", default="/camera/image_raw", help="image topic inside --bag")
    p.add_argument("--rate", type=float, default=12.0, help="frames per second (default 12)")
    p.add_argument("--size", type=int, default=None, help="resize frames to SIZE x SIZE")
    p.add_argument(
        "--variation",
        choices=["full", "station"],
        default="station",
        help="simulator scene variation (with --sim)",
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="camera_source", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="registered dataset name, e.g. sim_pouring or folder:PATH")
    src.add_argument("--sim", action="store_true", help="render episodes live with the simulator")
    src.add_argument("--video", help="video file or frame folder")
    src.add_argument("--bag", help="rosbag2 directory")
    _add_source_options(p)
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--ground-truth-topic", default="/tcc/ground_truth")
    p.add_argument(
        "--reset-service",
        default="/tcc/reset",
        help="the monitor's reset service, called between episodes (default /tcc/reset)",
    )
    p.add_argument(
        "--compressed",
        nargs="?",
        const=True,
        default=False,
        type=_truthy,
        help="publish JPEG CompressedImage (also --compressed true|false)",
    )
    p.add_argument(
        "--reliable",
        action="store_true",
        help="reliable QoS (default best effort); use it when the monitor subscribes reliably",
    )
    p.add_argument("--loop", action="store_true", help="start over at the end of the stream")
    p.add_argument(
        "--episode-gap",
        type=float,
        default=0.5,
        help="seconds between episodes, after the reset (default 0.5)",
    )
    p.add_argument(
        "--wait-subscribers",
        type=float,
        default=15.0,
        help="wait up to S seconds for an image subscriber before starting (default 15)",
    )
    p.add_argument(
        "--wait-ground-truth",
        action="store_true",
        help="also wait for a ground-truth subscriber (a console scoring the run)",
    )
    p.add_argument("--frame-id", default="camera")
    args = p.parse_args(list(argv))
    if args.rate <= 0:
        p.error(f"--rate must be > 0, got {args.rate}")
    if args.episodes is not None and args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.size is not None and args.size < 16:
        p.error(f"--size must be >= 16, got {args.size}")
    return args


def episodes_from_args(args: argparse.Namespace) -> Iterator[SourceEpisode]:
    """The episode iterator selected by the command line."""
    if args.dataset:
        return dataset_episodes(args.dataset, args.split, args.episodes, args.size)
    if args.sim:
        return sim_episodes(args.episodes or 1, args.seed, args.anomaly, args.size, args.variation)
    if args.video:
        return video_episode(args.video, args.size)
    return bag_episode(args.bag, args.bag_topic, args.size)


class CameraSourceNode:
    """Publishes episodes frame by frame at a fixed rate, with ground truth and resets."""

    def __init__(self, args: argparse.Namespace, context: Any = None) -> None:
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        from tcc_ros.msg import GroundTruth
        from tcc_ros.srv import ResetEpisode

        self.args = args
        self.node = Node("camera_source", context=context)
        qos = QoSProfile(
            depth=2 if not args.reliable else 10,
            reliability=(
                ReliabilityPolicy.RELIABLE if args.reliable else ReliabilityPolicy.BEST_EFFORT
            ),
        )
        self._image_type = CompressedImage if args.compressed else Image
        self.pub_image = self.node.create_publisher(self._image_type, args.image_topic, qos)
        self.pub_truth = self.node.create_publisher(
            GroundTruth, args.ground_truth_topic, ground_truth_qos()
        )
        self.reset_client = self.node.create_client(ResetEpisode, args.reset_service)
        self._GroundTruth, self._ResetEpisode = GroundTruth, ResetEpisode
        self._reset_warned = False
        self.stop_event = threading.Event()
        self.published = 0

    def _subscribed(self) -> bool:
        truth_wanted = self.args.wait_ground_truth
        return self.pub_image.get_subscription_count() > 0 and (
            not truth_wanted or self.pub_truth.get_subscription_count() > 0
        )

    def wait_for_subscribers(self) -> bool:
        """Wait until the image topic (and with ``--wait-ground-truth`` the ground-truth topic)
        has a subscriber, up to ``--wait-subscribers`` s."""
        deadline = time.monotonic() + self.args.wait_subscribers
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if self._subscribed():
                time.sleep(0.5)  # let the other outputs match too
                return True
            time.sleep(0.05)
        return self._subscribed()

    def _image_msg(self, frame: np.ndarray, header: Any) -> Any:
        from tcc_ros.image_conversion import rgb_to_compressed_fields, rgb_to_image_fields

        if self.args.compressed:
            return self._image_type(header=header, **rgb_to_compressed_fields(frame, "jpeg"))
        return self._image_type(header=header, **rgb_to_image_fields(frame))

    def publish_episode(self, episode: SourceEpisode, next_tick: float) -> float:
        """Publish every frame of ``episode`` on the rate grid starting at ``next_tick``."""
        from std_msgs.msg import Header

        period = 1.0 / self.args.rate
        for i in range(len(episode.frames)):
            delay = next_tick - time.monotonic()
            if delay > 0 and self.stop_event.wait(delay):
                break
            if self.stop_event.is_set():
                break
            next_tick = max(next_tick + period, time.monotonic() - period)
            header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id=self.args.frame_id)
            self.pub_image.publish(self._image_msg(episode.frames[i], header))
            if episode.truth is not None:
                self.pub_truth.publish(self._GroundTruth(header=header, **episode.truth[i]))
            self.published += 1
        return next_tick

    def reset_monitor(self) -> None:
        """Call the monitor's reset service (waits up to ``--episode-gap`` + 5 s for the answer)."""
        import rclpy

        log = self.node.get_logger()
        if not self.reset_client.service_is_ready():
            if not self._reset_warned:
                log.warning(f"no reset service {self.reset_client.srv_name}: episodes run on")
                self._reset_warned = True
            return
        future = self.reset_client.call_async(self._ResetEpisode.Request())
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=self.args.episode_gap + 5)
        result = future.result() if future.done() else None
        if result is None or not result.success:
            log.warning(f"monitor reset failed: {result.message if result else 'no answer'}")

    def run(self) -> int:
        """Publish the whole stream; returns the process exit code.

        The first episode is read before waiting for subscribers, so a source that cannot be
        read fails at once.
        """
        log = self.node.get_logger()
        episodes = episodes_from_args(self.args)
        first = next(episodes, None)
        if first is None:
            raise DatasetError("the source holds no episodes")
        if not self.wait_for_subscribers() and not self.stop_event.is_set():
            log.warning(
                f"no subscriber on {self.args.image_topic} (or its ground truth) after "
                f"{self.args.wait_subscribers:.0f} s; publishing anyway"
            )
        next_tick = time.monotonic()
        count = 0
        stream: Iterator[SourceEpisode] = itertools.chain([first], episodes)
        while not self.stop_event.is_set():
            for episode in stream:
                if self.stop_event.is_set():
                    break
                if count:
                    self.reset_monitor()
                    if self.stop_event.wait(self.args.episode_gap):
                        break
                    next_tick = time.monotonic()
                count += 1
                log.info(
                    f"episode {episode.name}: {len(episode.frames)} frames "
                    f"{episode.frames.shape[1]}x{episode.frames.shape[2]} "
                    f"at {self.args.rate:g} fps"
                    + (f", anomaly {episode.anomaly_kind}" if episode.anomaly_kind else "")
                )
                next_tick = self.publish_episode(episode, next_tick)
            if not self.args.loop:
                break
            stream = episodes_from_args(self.args)
        time.sleep(0.3)  # let the last messages leave before the participant goes away
        from rclpy.duration import Duration

        self.pub_truth.wait_for_all_acked(Duration(seconds=3))  # ground truth is reliable
        log.info(f"end of stream after {self.published} frames")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``camera_source ...``); ROS arguments after ``--ros-args`` are honoured."""
    from tcc_ros.monitor_node.app import catch_stop_signals, ignore_stop_signals

    stop = catch_stop_signals()  # from the start: no KeyboardInterrupt ever
    import rclpy
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(remove_ros_args(["camera_source", *argv])[1:])
    rclpy.init(
        args=["camera_source", *argv], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO
    )
    source = CameraSourceNode(args)
    source.stop_event = stop
    try:
        return source.run()
    finally:
        source.node.destroy_node()
        rclpy.try_shutdown()
        ignore_stop_signals()


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
