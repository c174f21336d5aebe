"""The paper's evaluation protocols over embedded episodes (normal episodes only).

Kendall's tau, phase classification, few-shot classification and phase progression, as
:mod:`tcc_model.evaluation` defines them; :func:`run_protocols` runs the subset a
:class:`ProtocolConfig` names and explains every skip in ``notes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tcc_model import evaluation as ev
from tcc_model.evaluate.embedding import EmbeddedVideo

DEFAULT_STRIDE = 2
#: protocols --protocols can choose from (default: all)
PROTOCOLS: tuple[str, ...] = ("tau", "classification", "few_shot", "progression")
_SUPERVISED = ("phase_classification", "few_shot", "phase_progression")


@dataclass
class ProtocolConfig:
    """Protocol settings (defaults = the reference's, tau stride 2 as for Pouring)."""

    stride: int = DEFAULT_STRIDE
    distance: str = "sqeuclidean"
    fractions: tuple[float, ...] = ev.CLASSIFICATION_FRACTIONS
    few_shot_num_labeled: tuple[int, ...] = ev.FEW_SHOT_NUM_LABELED
    few_shot_episodes: int = ev.FEW_SHOT_EPISODES
    few_shot_seed: int = ev.FEW_SHOT_SEED
    protocols: tuple[str, ...] = PROTOCOLS


def run_protocols(
    train: Sequence[EmbeddedVideo],
    val: Sequence[EmbeddedVideo],
    cfg: ProtocolConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The protocols of ``cfg.protocols`` on the normal episodes; returns a JSON-ready dict with
    notes on skips (a protocol not asked for is ``None`` with a note)."""
    from tqdm.auto import tqdm

    cfg = cfg or ProtocolConfig()
    notes: list[str] = []
    train_n = [v for v in train if v.is_normal]
    val_n = [v for v in val if v.is_normal]
    excluded = (len(train) - len(train_n), len(val) - len(val_n))
    if any(excluded):
        notes.append(
            f"protocols use normal episodes only: excluded {excluded[0]} train and "
            f"{excluded[1]} val episodes with an anomaly"
        )
    out: dict[str, Any] = {
        "num_videos": {"train": len(train_n), "val": len(val_n)},
        "num_frames": {
            "train": int(sum(len(v.embs) for v in train_n)),
            "val": int(sum(len(v.embs) for v in val_n)),
        },
        "excluded_anomalous": {"train": excluded[0], "val": excluded[1]},
    }
    with tqdm(total=1 + len(_SUPERVISED), desc="protocols", disable=not progress) as steps:
        out["kendalls_tau"] = _kendalls_tau(train_n, val_n, cfg, notes)
        steps.update()
        out.update(dict.fromkeys(_SUPERVISED))
        if set(cfg.protocols) - {"tau"}:
            _supervised(train_n, val_n, cfg, out, notes, steps.update)
        else:
            notes.append("not run (--protocols): classification, few_shot, progression")
    out["notes"] = notes
    return out


def _kendalls_tau(
    train: Sequence[EmbeddedVideo],
    val: Sequence[EmbeddedVideo],
    cfg: ProtocolConfig,
    notes: list[str],
) -> dict[str, Any]:
    """Mean Kendall's tau over ordered pairs of each split (``None`` when not run)."""
    tau: dict[str, Any] = {}
    for split, videos in (("val", val), ("train", train)):
        if "tau" not in cfg.protocols:
            tau[split] = None
            continue
        if len(videos) < 2:
            tau[split] = None
            notes.append(f"kendalls_tau on {split}: skipped, needs >= 2 normal videos")
            continue
        matrix = ev.kendalls_tau_matrix([v.embs for v in videos], cfg.stride, cfg.distance)
        off = matrix[~np.eye(len(videos), dtype=bool)]
        valid = off[~np.isnan(off)]
        tau[split] = {
            "value": float(valid.mean()) if valid.size else None,
            "num_pairs": int(off.size),
            "num_nan_pairs": int(off.size - valid.size),
        }
    return tau


def _supervised(
    train: Sequence[EmbeddedVideo],
    val: Sequence[EmbeddedVideo],
    cfg: ProtocolConfig,
    out: dict[str, Any],
    notes: list[str],
    step: Any,
) -> None:
    """Classification, few-shot and progression into ``out`` (on phase-labelled episodes)."""
    labelled_train = [v for v in train if v.phase_ids is not None]
    labelled_val = [v for v in val if v.phase_ids is not None]
    if not labelled_train or not labelled_val:
        reason = (
            "no per-frame phase labels (labels.phase_ids is None) in the "
            f"{'train' if not labelled_train else 'val'} split: phase classification, few-shot "
            "and progression need them; only Kendall's tau and unsupervised plots are reported"
        )
        notes.append(reason)
        out["supervised_skipped"] = reason
        return
    if len(labelled_train) < len(train) or len(labelled_val) < len(val):
        notes.append(
            "supervised protocols use the labelled episodes only "
            f"({len(labelled_train)}/{len(train)} train, {len(labelled_val)}/{len(val)} val)"
        )
    args = (
        [v.embs for v in labelled_train],
        [np.asarray(v.phase_ids) for v in labelled_train],
        [v.embs for v in labelled_val],
        [np.asarray(v.phase_ids) for v in labelled_val],
    )
    chosen = set(cfg.protocols)
    if "classification" in chosen:
        cls = ev.phase_classification(*args, fractions=cfg.fractions)
        out["phase_classification"] = {str(f): r.to_dict() for f, r in cls.items()}
    step()
    if "few_shot" in chosen:
        few = ev.few_shot_classification(
            *args, cfg.few_shot_num_labeled, cfg.few_shot_episodes, cfg.few_shot_seed
        )
        out["few_shot"] = {str(k): r.to_dict() for k, r in few.items()}
    step()
    if "progression" in chosen:
        num_phases = len(labelled_train[0].phase_names) or None
        prog = ev.phase_progression(*args, num_phases=num_phases, fractions=cfg.fractions)
        out["phase_progression"] = {str(f): r.to_dict() for f, r in prog.items()}
        notes += [
            f"phase_progression (fraction {f}): (video, event) pairs with the phase missing "
            f"were left out of that event: train {r.skipped_train}, val {r.skipped_val}"
            for f, r in prog.items()
            if r.skipped_train or r.skipped_val
        ]
    step()
    skipped = [p for p in PROTOCOLS if p not in chosen]
    if skipped:
        notes.append(f"not run (--protocols): {', '.join(skipped)}")
