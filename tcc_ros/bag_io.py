"""Read and write ROS 2 bags (MCAP and sqlite3) without a ROS installation, using ``rosbags``.

Images are decoded with :mod:`tcc_ros.image_conversion`, the same code the live node uses, so a
frame read from a bag is exactly what the monitor would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcc_ros.image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
GROUND_TRUTH_TYPE = "tcc_ros/msg/GroundTruth"
GROUND_TRUTH_TOPIC = "/tcc/ground_truth"
EPISODE_MARKER_TOPIC = "/tcc/episode"
#: Ways to cut a bag into episodes (see :func:`iter_episode_slices`).
EPISODE_MODES = ("auto", "per-bag", "marker-topic", "gap")
MONITOR_TOPICS = {
    "/tcc/progress": "tcc_ros/msg/TaskProgress",
    "/tcc/phase": "tcc_ros/msg/TaskPhase",
    "/tcc/alignment": "tcc_ros/msg/Alignment",
    "/tcc/anomaly": "tcc_ros/msg/Anomaly",
}


from tcc_model.errors import BagError  # noqa: E402  (re-exported)


def _msg_dir() -> Path:
    """Directory holding this package's ``.msg`` files (source tree or installed share/)."""
    candidates = [Path(__file__).resolve().parents[1] / "msg"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("tcc_ros")) / "msg")
    except Exception:  # noqa: BLE001 - ament index absent or package not installed
        pass
    for candidate in candidates:
        if (candidate / "TaskProgress.msg").is_file():
            return candidate
    raise BagError("cannot find the tcc_ros .msg definitions (msg/ next to the package)")


def make_typestore() -> Any:
    """A rosbags typestore with the ROS 2 standard types and this package's messages."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for path in sorted(_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"tcc_ros/msg/{path.stem}"))
    store.register(types)
    return store


def stamp_to_ns(header: Any) -> int:
    """``std_msgs/Header`` stamp → integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass
class BagImage:
    """One decoded camera frame from a bag."""

    stamp_ns: int
    log_time_ns: int
    frame: np.ndarray


@dataclass
class BagContents:
    """Frames, ground truth, episode markers and recorded monitor outputs of one bag."""

    path: Path
    images: list[BagImage]
    rejected_images: int = 0
    ground_truth: dict[int, Any] = field(default_factory=dict)
    markers: list[tuple[int, str]] = field(default_factory=list)
    monitor_outputs: dict[str, dict[int, Any]] = field(default_factory=dict)


def _open_reader(path: Path) -> Any:
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise BagError(f"bag not found: {path}")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for corrupt bags
        raise BagError(
            f"cannot open bag {path}: {exc} (is it a complete ROS 2 bag directory?)"
        ) from exc
    return reader


def read_bag(
    path: str | os.PathLike,
    image_topic: str = "/camera/image_raw",
    *,
    marker_topic: str = EPISODE_MARKER_TOPIC,
    typestore: Any | None = None,
) -> BagContents:
    """Read every frame of ``image_topic`` plus ground truth, markers and ``/tcc/*`` outputs.

    Frames that cannot be decoded are counted in ``rejected_images`` and skipped.
    """
    path = Path(path)
    store = typestore or make_typestore()
    reader = _open_reader(path)
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        if image_topic not in topics:
            raise BagError(
                f"image topic {image_topic!r} not in bag {path}; topics: "
                f"{', '.join(sorted(topics)) or '(none)'} (pass --image-topic)"
            )
        image_type = topics[image_topic]
        if image_type not in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE):
            raise BagError(
                f"topic {image_topic!r} in {path} has type {image_type}; "
                f"expected {IMAGE_TYPE} or {COMPRESSED_IMAGE_TYPE}"
            )
        wanted = {image_topic, GROUND_TRUTH_TOPIC, marker_topic, *MONITOR_TOPICS}
        connections = [c for c in reader.connections if c.topic in wanted]
        for conn in connections:  # types recorded by other builds: learn them from the bag
            if conn.msgtype not in store.types and conn.msgdef and conn.msgdef.data:
                from rosbags.typesys import get_types_from_msg

                store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        contents = BagContents(path=path, images=[])
        _read_messages(reader, store, connections, contents, image_topic, marker_topic)
    finally:
        reader.close()
    if not contents.images:
        raise BagError(f"bag {path} holds no decodable frames on {image_topic!r}")
    return contents


def _read_messages(
    reader: Any,
    store: Any,
    connections: list[Any],
    contents: BagContents,
    image_topic: str,
    marker_topic: str,
) -> None:
    """Deserialise the wanted messages into ``contents`` (undecodable frames are counted)."""
    image_type = next(c.msgtype for c in connections if c.topic == image_topic)
    decode = compressed_to_rgb if image_type == COMPRESSED_IMAGE_TYPE else image_to_rgb
    try:
        for conn, log_time, raw in reader.messages(connections=connections):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == image_topic:
                try:
                    frame = decode(msg)
                except ImageConversionError:
                    contents.rejected_images += 1
                    continue
                contents.images.append(BagImage(stamp_to_ns(msg.header), log_time, frame))
            elif conn.topic == GROUND_TRUTH_TOPIC:
                contents.ground_truth[stamp_to_ns(msg.header)] = msg
            elif conn.topic == marker_topic:
                contents.markers.append((log_time, str(getattr(msg, "data", ""))))
            else:
                outputs = contents.monitor_outputs.setdefault(conn.topic, {})
                outputs[stamp_to_ns(msg.header)] = msg
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags and the CDR decoder raise many types
        raise BagError(f"bag {contents.path} is corrupt or truncated: {exc}") from exc


class BagWriter:
    """Write camera frames, ground truth and episode markers to a new bag."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        storage: str = "mcap",
        image_topic: str = "/camera/image_raw",
        frame_id: str = "camera",
    ) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"unknown storage {storage!r}; use one of {sorted(plugins)}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists; choose a new --out (bags are never overwritten)")
        self.store = make_typestore()
        self.frame_id = frame_id
        self._writer = Writer(self.path, version=9, storage_plugin=plugins[storage])
        self._writer.open()
        t = self.store.types
        self._types = {
            "image": t[IMAGE_TYPE],
            "gt": t[GROUND_TRUTH_TYPE],
            "string": t["std_msgs/msg/String"],
            "header": t["std_msgs/msg/Header"],
            "time": t["builtin_interfaces/msg/Time"],
        }
        self._conn_image = self._writer.add_connection(
            image_topic, IMAGE_TYPE, typestore=self.store
        )
        self._conn_gt = self._writer.add_connection(
            GROUND_TRUTH_TOPIC, GROUND_TRUTH_TYPE, typestore=self.store
        )
        self._conn_marker = self._writer.add_connection(
            EPISODE_MARKER_TOPIC, "std_msgs/msg/String", typestore=self.store
        )

    def _header(self, stamp_ns: int) -> Any:
        stamp = self._types["time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        return self._types["header"](stamp=stamp, frame_id=self.frame_id)

    def write_marker(self, stamp_ns: int, episode: str) -> None:
        msg = self._types["string"](data=episode)
        self._writer.write(
            self._conn_marker, stamp_ns, self.store.serialize_cdr(msg, "std_msgs/msg/String")
        )

    def write_frame(
        self, stamp_ns: int, frame: np.ndarray, ground_truth: dict | None = None
    ) -> None:
        """Write one RGB uint8 frame (and its ground truth, same stamp)."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        h, w = frame.shape[:2]
        header = self._header(stamp_ns)
        image = self._types["image"](
            header=header,
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
            data=frame.reshape(-1),
        )
        self._writer.write(self._conn_image, stamp_ns, self.store.serialize_cdr(image, IMAGE_TYPE))
        if ground_truth is not None:
            gt = self._types["gt"](header=header, **ground_truth)
            self._writer.write(
                self._conn_gt, stamp_ns, self.store.serialize_cdr(gt, GROUND_TRUTH_TYPE)
            )

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_episode_slices(
    contents: BagContents, mode: str, gap_s: float = 1.0
) -> Iterator[tuple[str, slice]]:
    """Split a bag's frames into episodes: ``auto``, ``per-bag``, ``marker-topic`` or ``gap``.

    ``auto`` is ``marker-topic`` when the bag holds episode markers, else ``per-bag``. Yields
    ``(episode_name, slice into contents.images)``.
    """
    images = contents.images
    n = len(images)
    stem = contents.path.name
    if mode == "auto":
        mode = resolve_episode_mode(contents, mode)
    if mode == "per-bag":
        yield stem, slice(0, n)
        return
    if mode == "marker-topic":
        if not contents.markers:
            raise BagError(
                f"bag {contents.path} has no episode markers on {EPISODE_MARKER_TOPIC}; "
                "use --episodes per-bag or gap"
            )
        log_times = np.array([im.log_time_ns for im in images])
        starts = [(int(np.searchsorted(log_times, t)), name) for t, name in contents.markers]
        for i, (start, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else n
            if end > start:
                yield name or f"{stem}:{i}", slice(start, end)
        return
    if mode == "gap":
        stamps = np.array([im.stamp_ns for im in images], dtype=np.int64)
        cuts = np.flatnonzero(np.diff(stamps) > gap_s * 1e9) + 1
        bounds = [0, *cuts.tolist(), n]
        for i in range(len(bounds) - 1):
            yield f"{stem}:{i}", slice(bounds[i], bounds[i + 1])
        return
    raise BagError(f"unknown episode split {mode!r}; use one of {', '.join(EPISODE_MODES)}")


def resolve_episode_mode(contents: BagContents, mode: str) -> str:
    """The split ``mode`` stands for in this bag (``auto``: markers when present, else per bag)."""
    if mode != "auto":
        return mode
    return "marker-topic" if contents.markers else "per-bag"
