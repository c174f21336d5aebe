"""Reports of :mod:`tcc_model.evaluate`: headline numbers, the Markdown summary, plots, embeddings.

Every name is re-exported by :mod:`tcc_model.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tcc_model.evaluation import BOUNDARY_WINDOW
from tcc_model.reporting import fmt

if TYPE_CHECKING:
    from tcc_model.evaluate.embedding import EmbeddedVideo


def headline(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The paper's headline numbers from :func:`run_protocols` output (None when skipped)."""

    def get(section: str, key: str, field_name: str = "value"):
        sec = metrics.get(section)
        if not sec or sec.get(key) is None:
            return None
        return sec[key].get(field_name)

    return {
        "classification_10": get("phase_classification", "0.1"),
        "classification_50": get("phase_classification", "0.5"),
        "classification_100": get("phase_classification", "1.0"),
        "few_shot_1": get("few_shot", "1", "mean"),
        "progression_r2": get("phase_progression", "1.0"),
        "kendalls_tau": get("kendalls_tau", "val"),
    }


def _fmt(value: float | None, pct: bool = False) -> str:
    """A metric for the summary table: 4 decimals, or a percentage with 2 (``n/a`` if missing)."""
    if pct:
        return fmt(None if value is None else 100 * float(value), "{:.2f}")
    return fmt(None if value is None else float(value), "{:.4f}")


def summary_markdown(metrics: dict[str, Any], config: dict[str, Any]) -> str:
    """Human-readable summary of ``metrics`` (the output of :func:`run_protocols`)."""
    h = headline(metrics)
    split = config.get("splits", {}).get("val", "val")
    lines = [
        f"# Evaluation of `{config['checkpoint']}` on `{config['dataset']}`",
        "",
        f"Normal episodes only: {metrics['num_videos']['train']} train / "
        f"{metrics['num_videos']['val']} {split} videos ({metrics['num_frames']['train']} / "
        f"{metrics['num_frames']['val']} frames). Reported numbers are on **{split}**"
        + (" (in the metrics' `val` entries)." if split != "val" else "."),
        "",
        "| metric | value |",
        "|---|---|",
        "| phase classification 10% / 50% / 100% (frame acc., %) | "
        + " / ".join(_fmt(h[f"classification_{p}"], True) for p in (10, 50, 100))
        + " |",
        f"| few-shot, 1 labelled video (frame acc., %) | {_fmt(h['few_shot_1'], True)} |",
        f"| phase progression (R²) | {_fmt(h['progression_r2'])} |",
        f"| Kendall's τ (stride {config['stride']}, {config['distance']}) | "
        f"{_fmt(h['kendalls_tau'])} |",
    ]
    cls10 = (metrics.get("phase_classification") or {}).get("0.1") or {}
    if cls10.get("errors_per_boundary") is not None:
        lines.append(
            "| phase classification 10%: errors per phase change (within "
            f"{BOUNDARY_WINDOW} frames) / accuracy away from the changes (%) | "
            f"{cls10['errors_per_boundary']:.2f} / {_fmt(cls10.get('interior_accuracy'), True)} |"
        )
    tau_train = (metrics.get("kendalls_tau") or {}).get("train")
    if tau_train:
        lines.append(f"| Kendall's τ on train | {_fmt(tau_train['value'])} |")
    few = metrics.get("few_shot")
    if few:
        lines += ["", "Few-shot (mean and 95% t-interval over episodes, %):", ""]
        lines += ["| labelled videos | mean | 95% CI | episodes |", "|---|---|---|---|"]
        for k, r in few.items():
            ci = (
                f"[{_fmt(r['ci95_low'], True)}, {_fmt(r['ci95_high'], True)}]"
                if r["mean"] is not None
                else r["skipped"]
            )
            lines.append(f"| {k} | {_fmt(r['mean'], True)} | {ci} | {r['num_episodes']} |")
    if metrics.get("notes"):
        lines += ["", "Notes:", ""] + [f"* {n}" for n in metrics["notes"]]
    reports = config.get("reports") or []
    if reports:
        lines += ["", "Visual reports:", ""] + [f"* `{r}`" for r in reports]
    lines += [
        "",
        "Protocols follow the reference implementation: SVC(decision_function_shape='ovo') with "
        "sklearn defaults on the first max(1, int(f·N)) training videos; few-shot with a "
        f"RandomState({config['few_shot_seed']}) permutation stream; progression = mean R² of one "
        "OLS per key event on (t - t_k)/L; Kendall's τ over all ordered val pairs.",
    ]
    return "\n".join(lines) + "\n"


def write_visual_reports(
    train: Sequence[EmbeddedVideo],
    val: Sequence[EmbeddedVideo],
    out_dir: Path,
    max_videos: int = 4,
    video: bool = True,
    tsne: bool = False,
) -> list[str]:
    """Similarity matrices, 2-D embeddings, progress curves and a synchronized MP4 of val videos.

    Every picture names its episodes: panel titles, curve legends, trajectory starts in the
    projection, and in the video each tile's caption (episode, frame) and phase.
    """
    from tcc_model import visualize as vis

    videos = [v for v in val if v.is_normal] or [v for v in train if v.is_normal]
    written: list[str] = []
    if not videos:
        return written
    shown = videos[:max_videos]
    if len(shown) >= 2:
        pairs = [(shown[0].embs, v.embs) for v in shown[1:]]
        titles = [f"{shown[0].name} vs {v.name}" for v in shown[1:]]
        written.append(vis.plot_similarity_matrices(pairs, out_dir / "similarity.png", titles).name)
    labelled = all(v.phase_ids is not None for v in videos)
    for method in ("pca", "tsne") if tsne else ("pca",):
        written.append(
            vis.plot_embeddings_2d(
                [v.embs for v in videos],
                out_dir / f"embeddings_{method}.png",
                [np.asarray(v.phase_ids) for v in videos] if labelled else None,
                videos[0].phase_names if labelled else None,
                method,
                names=[v.name for v in videos],
            ).name
        )
    true_progress = None
    if labelled:
        from tcc_model.data.format import progress_from_key_events

        true_progress = [progress_from_key_events(len(v.embs), v.key_events) for v in shown]
    written.append(
        vis.plot_progress_curves(
            [v.embs for v in shown],
            shown[0].embs,
            out_dir / "progress_curves.png",
            [v.name for v in shown],
            true_progress,
        ).name
    )
    if video and len(shown) >= 2 and shown[0].episode is not None:
        written.append(_synchronized_video(shown, out_dir / "synchronized.mp4").name)
    return written


def _synchronized_video(shown: Sequence[EmbeddedVideo], path: Path) -> Path:
    """The synchronized playback grid of ``shown`` (the first is the reference), captioned."""
    from tcc_model import visualize as vis
    from tcc_model.preprocess import resize_frames

    raw = [v.episode.load_frames() for v in shown]
    size = min(int(raw[0].shape[1]), 224)  # square tiles at most 224 px
    frames = [resize_frames(f, size) for f in raw]
    labelled = all(v.phase_ids is not None for v in shown)
    return vis.write_synchronized_grid(
        path,
        frames[0],
        shown[0].embs,
        list(zip(frames[1:], [v.embs for v in shown[1:]])),
        fps=shown[0].fps,
        names=[f"{v.name} (reference)" if i == 0 else v.name for i, v in enumerate(shown)],
        phases=[v.phase_ids for v in shown] if labelled else None,
        phase_names=shown[0].phase_names if labelled else None,
    )


def save_embeddings(path: Path, splits: dict[str, Sequence[EmbeddedVideo]]) -> None:
    """``embeddings.npz``: ``<split>/<episode>`` → ``[N, D]`` float32 (no pickles)."""
    from tcc_model.utils import atomic_path

    arrays = {f"{s}/{v.name}": v.embs.astype(np.float32) for s, vs in splits.items() for v in vs}
    savez: Any = np.savez_compressed  # numpy's stub takes **arrays for its allow_pickle flag
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        savez(fh, **arrays)
