"""Loading a bundle into a streaming monitor for the node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tcc_model.errors import ConfigError
from tcc_ros.monitor_node.outputs import BundleInfo


class FrameMonitor(Protocol):
    """What the node needs from a monitor (``tcc_model.stream.ProgressMonitor`` satisfies it)."""

    def process_frame(self, frame: np.ndarray, stamp: float) -> Any: ...

    def reset(self) -> None: ...

    def update_settings(self, **overrides: Any) -> None:
        """Change runtime-safe MonitorConfig fields from the next frame; ConfigError if bad."""
        ...


@dataclass
class LoadedMonitor:
    """A monitor and what ``MonitorInfo`` says about it."""

    monitor: FrameMonitor
    info: BundleInfo


MonitorFactory = Callable[[str, str, int, dict[str, Any]], LoadedMonitor]


def load_monitor(
    bundle: str, backend: str, threads: int, overrides: dict[str, Any]
) -> LoadedMonitor:
    """Load ``bundle`` (engine + references) and build a streaming monitor.

    Settings: the bundle's calibration, then ``overrides`` (MonitorConfig fields), through
    :func:`tcc_model.stream.monitor_config`. Raises a :class:`~tcc_model.errors.UserError`
    naming the bundle or the setting.
    """
    from tcc_model.cli import check_bundle
    from tcc_model.engine import load_bundle
    from tcc_model.stream import (
        ANOMALY_SCORE_THRESHOLD,
        ProgressMonitor,
        ReferenceSet,
        monitor_config,
    )

    if not bundle:
        raise ConfigError("parameter bundle is empty; set it to an exported bundle directory")
    check_bundle(bundle, option="parameter bundle")
    config = monitor_config(bundle, overrides)
    engine = load_bundle(bundle, backend=backend, threads=threads)
    references = ReferenceSet.load(bundle)

    info = BundleInfo(
        bundle_path=str(bundle),
        bundle_id=str(getattr(engine, "bundle_id", "")),
        backend=str(getattr(engine, "backend", backend)),
        phase_names=list(references.phase_names),
        reference_ids=list(references.reference_ids),
        reference_lengths=[len(e) for e in references.embeddings],
        anomaly_score_threshold=ANOMALY_SCORE_THRESHOLD,
    )
    monitor = ProgressMonitor(references, config=config, engine=engine)
    return LoadedMonitor(monitor=monitor, info=info)
