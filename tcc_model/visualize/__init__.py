"""Pictures people read: embedding plots, monitor timelines, score plots and annotated videos.

* :mod:`~tcc_model.visualize.plots`: similarity matrices, 2-D projections, aligned progress.
* :mod:`~tcc_model.visualize.timeline`: per-episode timelines of the streaming monitor and
  ``write_monitor_plots`` (overview, one timeline per episode, phase confusion).
* :mod:`~tcc_model.visualize.metrics`: phase confusion matrix, training loss curve.
* :mod:`~tcc_model.visualize.videos`: captions on frames, the synchronized playback grid.

Plots use matplotlib's Agg backend (no display needed) through :mod:`tcc_model.reporting`.
"""

from tcc_model.visualize.metrics import (
    curves_from_tensorboard,
    phase_confusion,
    plot_loss_curve,
    plot_phase_confusion,
)
from tcc_model.visualize.plots import (
    aligned_progress,
    plot_embeddings_2d,
    plot_progress_curves,
    plot_similarity_matrices,
    project_2d,
)
from tcc_model.visualize.timeline import (
    EpisodeTimeline,
    plot_episode_timeline,
    plot_timeline_overview,
    timeline_from_results,
    write_monitor_plots,
)
from tcc_model.visualize.videos import (
    annotate_frames,
    phase_text,
    synchronized_grid,
    write_synchronized_grid,
)

__all__ = [
    "EpisodeTimeline",
    "aligned_progress",
    "annotate_frames",
    "curves_from_tensorboard",
    "phase_confusion",
    "phase_text",
    "plot_embeddings_2d",
    "plot_episode_timeline",
    "plot_loss_curve",
    "plot_phase_confusion",
    "plot_progress_curves",
    "plot_similarity_matrices",
    "plot_timeline_overview",
    "project_2d",
    "synchronized_grid",
    "timeline_from_results",
    "write_monitor_plots",
    "write_synchronized_grid",
]
