"""ROS 2 node: a camera replayed from a video, a dataset, a rosbag or the live pouring simulator.

Publishes ``sensor_msgs/Image`` (or ``CompressedImage``) at a fixed rate, and, for labelled
sources, ``tcc_ros/GroundTruth`` on ``/tcc/ground_truth`` with the **same** ``header.stamp`` as
the image. Between episodes it publishes ``std_msgs/Empty`` on ``/tcc/reset``. At the end of the
stream it exits (or starts over with ``--loop``).

Examples::

    python -m tcc_ros.camera_source --dataset sim_pouring --split test --episodes 3 --rate 12
    python -m tcc_ros.camera_source --sim --episodes 2 --anomaly drop --rate 12
    python -m tcc_ros.camera_source --video demo.mp4 --rate 30 --size 224
    python -m tcc_ros.camera_source --bag recording/ --bag-topic /camera/image_raw
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ANOMALY_KINDS = ("drop", "miss", "stall", "reversed")


@dataclass
class SourceEpisode:
    """Frames of one episode plus its per-frame ground truth (``truth is None`` when unlabelled)."""

    name: str
    frames: np.ndarray  # [N, H, W, 3] RGB uint8
    truth: list[dict[str, Any]] | None = None  # GroundTruth fields per frame (ground_truth_fields)

    @classmethod
    def from_labels(cls, name: str, frames: np.ndarray, labels: Any) -> SourceEpisode:
        """Build from frames and an ``EpisodeLabels`` (or its dict form)."""
        from tcc_model.data.format import EpisodeLabels
        from tcc_ros.ground_truth import ground_truth_fields

        if isinstance(labels, dict):
            labels = EpisodeLabels.from_dict(labels)
        if len(frames) != labels.num_frames:
            raise ValueError(
                f"episode {name}: {len(frames)} frames but its labels say {labels.num_frames}"
            )
        return cls(name=name, frames=frames, truth=ground_truth_fields(labels, name))

    @property
    def anomaly_kind(self) -> str:
        """The episode's anomaly type, or ``""``."""
        return self.truth[0]["anomaly_kind"] if self.truth else ""


def _resize(frames: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return frames
    from tcc_model.preprocess import resize_frames

    return resize_frames(frames, size)


def dataset_episodes(
    name: str, split: str, limit: int | None, size: int | None
) -> Iterator[SourceEpisode]:
    """Episodes of a registered dataset split (``tcc_model.data.registry`` names)."""
    from tcc_model.data.registry import load_dataset_split

    episodes = load_dataset_split(name, split)
    if not episodes:
        raise ValueError(f"--dataset {name} --split {split}: the split holds no episodes")
    for episode in episodes[:limit]:
        frames = _resize(episode.load_frames(), size)
        if episode.labels.has_phase_labels:
            yield SourceEpisode.from_labels(episode.name, frames, episode.labels)
        else:
            yield SourceEpisode(episode.name, frames)


def sim_episodes(
    count: int, seed: int, anomaly: str | None, size: int | None, variation: str = "station"
) -> Iterator[SourceEpisode]:
    """Episodes rendered live by the pouring simulator (``anomaly`` applies to every episode)."""
    from tcc_model.data.sim_pouring import render_episode

    for i in range(count):
        kwargs = {"size": size} if size else {}
        frames, labels = render_episode(seed + i, anomaly, variation=variation, **kwargs)
        yield SourceEpisode.from_labels(f"sim_{seed + i:05d}", np.asarray(frames), labels)


def video_episode(path: str, size: int | None) -> Iterator[SourceEpisode]:
    """One unlabelled episode from a video file or frame folder."""
    from tcc_model.data.format import read_video

    if not Path(path).exists():
        raise ValueError(f"--video {path}: no such file or folder")
    yield SourceEpisode(Path(path).stem, _resize(read_video(path), size))


def bag_episode(path: str, topic: str, size: int | None) -> Iterator[SourceEpisode]:
    """Episodes from the image topic of a rosbag2 (sqlite3 or mcap), read with ``bag_io``.

    A bag with episode markers (as ``record_sim_bag`` writes them) is split at the markers; one
    with ``/tcc/ground_truth`` for every frame of an episode replays that ground truth too.
    """
    from tcc_ros.bag_io import iter_episode_slices, read_bag

    contents = read_bag(path, topic)
    mode = "marker-topic" if contents.markers else "per-bag"
    for name, frames_slice in iter_episode_slices(contents, mode):
        images = contents.images[frames_slice]
        truth_msgs = [contents.ground_truth.get(im.stamp_ns) for im in images]
        truth = (
            None
            if any(t is None for t in truth_msgs)
            else [{key: getattr(t, key) for key in _TRUTH_FIELDS} for t in truth_msgs]
        )
        frames = _resize(np.stack([im.frame for im in images]), size)
        yield SourceEpisode(name, frames, truth)


_TRUTH_FIELDS = (
    "episode",
    "frame_index",
    "num_frames",
    "phase_id",
    "phase_name",
    "progress",
    "anomaly",
    "anomaly_kind",
)


def _truthy(text: str) -> bool:
    """``true``/``false`` (any case, also 1/0, yes/no) as given by a launch argument."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="camera_source", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="registered dataset name, e.g. sim_pouring or folder:PATH")
    src.add_argument("--sim", action="store_true", help="render episodes live with the simulator")
    src.add_argument("--video", help="video file or frame folder")
    src.add_argument("--bag", help="rosbag2 directory")
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
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--ground-truth-topic", default="/tcc/ground_truth")
    p.add_argument("--reset-topic", default="/tcc/reset")
    p.add_argument(
        "--compressed",
        nargs="?",
        const=True,
        default=False,
        type=_truthy,
        help="publish JPEG CompressedImage (also --compressed true|false)",
    )
    p.add_argument("--reliable", action="store_true", help="reliable QoS (default best effort)")
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
        from std_msgs.msg import Empty

        from tcc_ros.msg import GroundTruth

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
        self.pub_truth = self.node.create_publisher(GroundTruth, args.ground_truth_topic, 50)
        self.pub_reset = self.node.create_publisher(Empty, args.reset_topic, 10)
        self._GroundTruth, self._Empty = GroundTruth, Empty
        self.stop_event = threading.Event()
        self.published = 0

    def wait_for_subscribers(self) -> bool:
        """Wait until the image topic has a subscriber (up to ``--wait-subscribers`` s)."""
        deadline = time.monotonic() + self.args.wait_subscribers
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if self.pub_image.get_subscription_count() > 0:
                time.sleep(0.5)  # let the other outputs match too
                return True
            time.sleep(0.05)
        return self.pub_image.get_subscription_count() > 0

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

    def run(self) -> int:
        """Publish the whole stream; returns the process exit code."""
        log = self.node.get_logger()
        if not self.wait_for_subscribers() and not self.stop_event.is_set():
            log.warning(
                f"no subscriber on {self.args.image_topic} after "
                f"{self.args.wait_subscribers:.0f} s; publishing anyway"
            )
        next_tick = time.monotonic()
        first = True
        while not self.stop_event.is_set():
            for episode in episodes_from_args(self.args):
                if self.stop_event.is_set():
                    break
                if not first:
                    self.pub_reset.publish(self._Empty())
                    if self.stop_event.wait(self.args.episode_gap):
                        break
                    next_tick = time.monotonic()
                first = False
                log.info(
                    f"episode {episode.name}: {len(episode.frames)} frames "
                    f"{episode.frames.shape[1]}x{episode.frames.shape[2]} "
                    f"at {self.args.rate:g} fps"
                    + (f", anomaly {episode.anomaly_kind}" if episode.anomaly_kind else "")
                )
                next_tick = self.publish_episode(episode, next_tick)
            if not self.args.loop:
                break
        time.sleep(0.3)  # let the last messages leave before the participant goes away
        log.info(f"end of stream after {self.published} frames")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``camera_source ...``); ROS arguments after ``--ros-args`` are honoured."""
    import rclpy
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(remove_ros_args(["camera_source", *argv])[1:])
    rclpy.init(
        args=["camera_source", *argv], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO
    )
    source = CameraSourceNode(args)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: source.stop_event.set())
    try:
        return source.run()
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: camera_source: {exc}", file=sys.stderr)
        return 2
    finally:
        source.node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
