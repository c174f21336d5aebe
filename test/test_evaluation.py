"""Evaluation protocols on constructed embeddings with known answers."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tcc_model import evaluation as ev


def _curve(num_frames: int, dim: int = 4) -> np.ndarray:
    """A smooth, non-self-intersecting trajectory: nearest neighbours follow time."""
    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    return np.concatenate([t, t**2, np.sin(t), np.cos(t)], axis=1)[:, :dim]


def _tau_b_by_counting(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b from its definition (pair counting), independent of scipy."""
    conc = disc = ties_x = ties_y = 0
    for a, b in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[b] - x[a]), np.sign(y[b] - y[a])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            conc += 1
        else:
            disc += 1
    denom = np.sqrt((conc + disc + ties_x) * (conc + disc + ties_y))
    return (conc - disc) / denom if denom else float("nan")


# ------------------------------------------------------------------------------ Kendall's tau


def test_tau_is_one_for_aligned_copies_and_minus_one_for_reversed():
    video = _curve(30)
    assert ev.kendalls_tau([video, video.copy(), video.copy()], stride=1) == pytest.approx(1.0)
    assert ev.kendalls_tau([video, video[::-1]], stride=1) == pytest.approx(-1.0)
    odd = _curve(31)  # odd length: [::2] of the reversed video hits the same frames
    assert ev.kendalls_tau([odd, odd[::-1]], stride=2, distance="cosine") == pytest.approx(-1.0)


def test_tau_uses_ordered_pairs_and_matches_pair_counting():
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=(n, 3)) for n in (9, 13, 7, 11)]
    stride = 2
    matrix = ev.kendalls_tau_matrix(videos, stride=stride)
    expected = np.full((4, 4), np.nan)
    for i, j in itertools.permutations(range(4), 2):
        q, c = videos[i][::stride], videos[j][::stride]
        nns = np.argmin(((q[:, None, :] - c[None, :, :]) ** 2).sum(-1), axis=1)
        expected[i, j] = _tau_b_by_counting(np.arange(len(nns)), nns)
    np.testing.assert_allclose(matrix, expected, equal_nan=True)
    assert np.all(np.isnan(np.diag(matrix)))
    off = expected[~np.eye(4, dtype=bool)]
    assert ev.kendalls_tau(videos, stride=stride) == pytest.approx(np.nanmean(off))


def test_tau_is_asymmetric_between_directions():
    a = np.arange(4, dtype=float)[:, None]  # 0 1 2 3
    b = np.array([[0.0], [3.0]])
    m = ev.kendalls_tau_matrix([a, b], stride=1)
    # a -> b: nns = [0, 0, 1, 1]: tau-b = 4 / sqrt(6 * 4); b -> a: nns = [0, 3]: tau = 1.
    assert m[0, 1] == pytest.approx(4 / np.sqrt(24))
    assert m[1, 0] == pytest.approx(1.0)
    assert ev.kendalls_tau([a, b], stride=1) == pytest.approx((4 / np.sqrt(24) + 1) / 2)


def test_tau_stride_subsamples_query_and_candidates():
    ordered = _curve(20)
    scrambled = ordered.copy()
    scrambled[1::2] = ordered[1::2][::-1]  # odd frames run backwards
    assert ev.kendalls_tau([ordered, scrambled], stride=2) == pytest.approx(1.0)
    assert ev.kendalls_tau([ordered, scrambled], stride=1) < 0.5


def test_tau_drops_undefined_pairs():
    video = _curve(10)
    constant = np.ones((10, 4))
    m = ev.kendalls_tau_matrix([video, video.copy(), constant], stride=1)
    assert np.isnan(m[0, 2]) and np.isnan(m[2, 0]) and np.isnan(m[2, 1])
    assert ev.kendalls_tau([video, video.copy(), constant], stride=1) == pytest.approx(1.0)


def test_tau_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 videos"):
        ev.kendalls_tau([_curve(5)])
    with pytest.raises(ValueError, match="distance"):
        ev.kendalls_tau([_curve(5), _curve(5)], distance="l1")
    with pytest.raises(ValueError, match="embedding dim"):
        ev.kendalls_tau([_curve(5, 4), _curve(5, 3)])


# ------------------------------------------------------------------------------ classification


def _phase_video(rng, lengths=(5, 7, 6), swap=False, scale=0.05):
    """Frames of phase p sit near centre p (3 well separated clusters); optionally mislabelled."""
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    labels = np.concatenate([np.full(n, p) for p, n in enumerate(lengths)])
    embs = centres[labels] + scale * rng.normal(size=(len(labels), 2))
    if swap:
        labels = np.array([1, 0, 2])[labels]
    return embs, labels


def test_separable_phases_give_accuracy_one():
    rng = np.random.default_rng(1)
    train = [_phase_video(rng) for _ in range(10)]
    val = [_phase_video(rng, (4, 9, 3)) for _ in range(3)]
    res = ev.phase_classification(
        [e for e, _ in train],
        [lab for _, lab in train],
        [e for e, _ in val],
        [lab for _, lab in val],
    )
    assert set(res) == {0.1, 0.5, 1.0}
    for f, r in res.items():
        assert r.value == pytest.approx(1.0)
        assert r.num_train_videos == max(1, int(f * 10))
        assert r.num_eval_frames == 3 * 16


def test_classification_trains_on_the_first_videos():
    rng = np.random.default_rng(2)
    # Only video 0 is labelled correctly; the 9 others have phases 0 and 1 swapped.
    train = [_phase_video(rng, swap=i > 0) for i in range(10)]
    val = [_phase_video(rng) for _ in range(2)]
    args = ([e for e, _ in train], [lab for _, lab in train])
    vals = ([e for e, _ in val], [lab for _, lab in val])
    res = ev.phase_classification(*args, *vals, fractions=(0.1, 1.0))
    assert res[0.1].value == pytest.approx(1.0)  # video 0 only
    # All 10 videos: 9 of 10 swap phases 0/1, so those frames are misclassified.
    n0_n1 = 5 + 7
    assert res[1.0].value == pytest.approx(1 - n0_n1 / 18)


def test_boundary_breakdown_counts_errors_per_phase_change_and_interior_frames():
    labels = [np.array([0] * 8 + [1] * 9), np.zeros(5, dtype=int)]
    predicted = [labels[0].copy(), labels[1].copy()]
    predicted[0][8] = 0  # the change placed one frame late: within 3 frames of it
    predicted[0][0] = 1  # 7.5 frames from the change: an interior error
    errors, interior = ev.boundary_breakdown(predicted, labels)
    assert errors == pytest.approx(1.0)  # one change, one error near it
    # 6 frames lie within 3 of the change; 11 + 5 interior frames, one of them wrong
    assert interior == pytest.approx(15 / 16)
    assert ev.boundary_breakdown([np.zeros(4)], [np.zeros(4)]) == (None, 1.0)


def test_same_boundary_precision_reads_lower_accuracy_on_a_faster_motion():
    """A change placed one frame late costs a 40-frame video 2.5 points, a 20-frame one 5."""
    slow, fast = np.array([0] * 20 + [1] * 20), np.array([0] * 10 + [1] * 10)
    late = [np.r_[y[:1], y[:-1]] for y in (slow, fast)]
    for y, p in zip((slow, fast), late):
        assert ev.boundary_breakdown([p], [y]) == (pytest.approx(1.0), pytest.approx(1.0))
    assert np.mean(late[0] == slow) == pytest.approx(0.975)
    assert np.mean(late[1] == fast) == pytest.approx(0.95)


def test_classification_reports_the_boundary_breakdown():
    rng = np.random.default_rng(4)
    train = [_phase_video(rng) for _ in range(4)]
    val = [_phase_video(rng) for _ in range(2)]
    res = ev.phase_classification(
        [e for e, _ in train],
        [y for _, y in train],
        [e for e, _ in val],
        [y for _, y in val],
        fractions=(1.0,),
    )[1.0]
    assert res.value == pytest.approx(1.0)
    assert res.errors_per_boundary == pytest.approx(0.0)
    assert res.interior_accuracy == pytest.approx(1.0)
    assert {"errors_per_boundary", "interior_accuracy"} <= set(res.to_dict())


def test_single_class_training_set_is_skipped():
    rng = np.random.default_rng(3)
    embs, labels = _phase_video(rng, (6, 0, 0))
    val_embs, val_labels = _phase_video(rng)
    res = ev.phase_classification([embs], [labels], [val_embs], [val_labels], fractions=(1.0,))
    assert res[1.0].value is None and "single phase" in res[1.0].skipped


def test_empty_validation_split_is_skipped():
    rng = np.random.default_rng(4)
    embs, labels = _phase_video(rng)
    res = ev.phase_classification([embs], [labels], [], [], fractions=(1.0,))
    assert res[1.0].value is None and "empty val" in res[1.0].skipped


# ------------------------------------------------------------------------------ few-shot


def test_few_shot_draws_the_reference_permutation_stream():
    rng = np.random.default_rng(5)
    train = [_phase_video(rng, swap=i > 0) for i in range(6)]
    val = [_phase_video(rng)]
    res = ev.few_shot_classification(
        [e for e, _ in train],
        [lab for _, lab in train],
        [val[0][0]],
        [val[0][1]],
        num_labeled=(1, 2),
        episodes=20,
    )
    # Episode accuracy is 1 when the drawn video is video 0, else 6/18 (phase 2 only).
    np.random.seed(42)
    draws = [np.random.permutation(6)[:1] for _ in range(20)]
    expected = [1.0 if d[0] == 0 else 6 / 18 for d in draws]
    np.testing.assert_allclose(res[1].accuracies, expected)
    assert res[1].mean == pytest.approx(np.mean(expected))
    assert res[1].ci95_low <= res[1].mean <= res[1].ci95_high
    assert res[2].num_episodes == 20


def test_few_shot_skips_impossible_counts():
    rng = np.random.default_rng(6)
    train = [_phase_video(rng) for _ in range(2)]
    res = ev.few_shot_classification(
        [e for e, _ in train],
        [lab for _, lab in train],
        [train[0][0]],
        [train[0][1]],
        num_labeled=(1, 3),
        episodes=3,
    )
    assert res[1].mean == pytest.approx(1.0)
    assert res[3].mean is None and "only 2 training videos" in res[3].skipped


# ------------------------------------------------------------------------------ progression


def test_progression_targets_follow_last_frame_of_each_phase():
    labels = np.array([0, 0, 1, 1, 1, 2])
    targets = ev.progression_targets(labels, 3)
    t = np.arange(6)
    np.testing.assert_allclose(targets[:, 0], (t - 1) / 6)
    np.testing.assert_allclose(targets[:, 1], (t - 4) / 6)
    missing = ev.progression_targets(np.array([0, 0, 2, 2]), 3)
    assert np.all(np.isnan(missing[:, 1])) and not np.any(np.isnan(missing[:, 0]))


def _progress_video(lengths):
    """Embeddings [t/L, t_0/L, t_1/L]: every progression target is exactly linear in them."""
    labels = np.concatenate([np.full(n, p) for p, n in enumerate(lengths)])
    length = len(labels)
    t = np.arange(length) / length
    last = [
        (np.flatnonzero(labels == k)[-1] if np.any(labels == k) else 0) / length for k in range(2)
    ]
    embs = np.stack([t, np.full(length, last[0]), np.full(length, last[1])], axis=1)
    return embs, labels


def test_linear_progress_gives_r2_one_and_missing_phase_is_skipped():
    train = [_progress_video(n) for n in ((4, 6, 5), (8, 3, 9), (5, 5, 5), (2, 10, 4))]
    val = [_progress_video((6, 6, 3)), _progress_video((7, 0, 6))]  # video 1 lacks phase 1
    res = ev.phase_progression(
        [e for e, _ in train],
        [lab for _, lab in train],
        [e for e, _ in val],
        [lab for _, lab in val],
        num_phases=3,
    )[1.0]
    assert res.value == pytest.approx(1.0)
    assert len(res.per_event_r2) == 2
    assert res.skipped_val == [(1, 1)] and res.skipped_train == []


def test_progression_r2_drops_for_uninformative_embeddings():
    rng = np.random.default_rng(7)
    train = [_progress_video((5, 5, 5)) for _ in range(3)]
    noise_train = [rng.normal(size=e.shape) for e, _ in train]
    val = [_progress_video((4, 6, 5))]
    res = ev.phase_progression(
        noise_train, [lab for _, lab in train], [rng.normal(size=val[0][0].shape)], [val[0][1]]
    )[1.0]
    assert res.value < 0.5


# ------------------------------------------------------------------------------ run_protocols


def _embedded(name, embs, labels=None, anomaly=None):
    from tcc_model.evaluate import EmbeddedVideo

    return EmbeddedVideo(
        name, embs, labels, ["a", "b", "c"] if labels is not None else [], anomaly=anomaly
    )


def test_run_protocols_without_phase_labels_reports_tau_only():
    from tcc_model.evaluate import ProtocolConfig, run_protocols

    videos = [_embedded(f"v{i}", _curve(12 + i)) for i in range(3)]
    out = run_protocols(videos, videos, ProtocolConfig(stride=1), progress=False)
    assert out["kendalls_tau"]["val"]["value"] == pytest.approx(
        ev.kendalls_tau([v.embs for v in videos], stride=1)
    )
    assert out["phase_classification"] is None and out["few_shot"] is None
    assert "phase_ids is None" in out["supervised_skipped"]


def test_run_protocols_uses_normal_episodes_only():
    from tcc_model.evaluate import ProtocolConfig, headline, run_protocols

    rng = np.random.default_rng(8)
    train = [_embedded(f"t{i}", *_phase_video(rng)) for i in range(4)]
    val = [_embedded(f"v{i}", *_phase_video(rng)) for i in range(2)]
    embs, labels = _phase_video(rng)
    val.append(_embedded("bad", embs, np.zeros_like(labels), anomaly="drop"))  # mislabelled
    out = run_protocols(train, val, ProtocolConfig(few_shot_episodes=2), progress=False)
    assert out["num_videos"] == {"train": 4, "val": 2}
    assert out["excluded_anomalous"] == {"train": 0, "val": 1}
    h = headline(out)
    assert h["classification_100"] == pytest.approx(1.0) and h["few_shot_1"] == pytest.approx(1.0)
    assert any("normal episodes only" in n for n in out["notes"])


# ------------------------------------------------------------------------------ CLI smoke test


def _tiny_dataset(root, size: int = 32):
    """4 train + 3 normal val + 1 anomalous val videos of a square moving right; random model."""
    fmt = pytest.importorskip("tcc_model.data.format", reason="needs the dataset format module")
    models = pytest.importorskip("tcc_model.models", reason="needs the model module")
    ckpt = pytest.importorskip("tcc_model.checkpoint", reason="needs the checkpoint module")
    pytest.importorskip("tcc_model.embed", reason="needs the embedding module")
    rng = np.random.default_rng(0)
    names = ["left", "middle", "right"]
    for split, count in (("train", 4), ("val", 4)):
        for e in range(count):
            length = int(rng.integers(20, 30))
            frames = np.zeros((length, size, size, 3), np.uint8)
            for t, x in enumerate(np.linspace(2, size - 10, length).astype(int)):
                frames[t, 8:16, x : x + 8] = 255
            phases = np.minimum(np.arange(length) * 3 // length, 2)
            anomalous = split == "val" and e == count - 1
            mask = (np.arange(length) >= length // 2).astype(int) if anomalous else None
            labels = fmt.EpisodeLabels(
                video="",
                fps=10.0,
                num_frames=length,
                phase_names=names,
                phase_ids=phases.tolist(),
                key_events=fmt.key_events_from_phase_ids(phases, names),
                anomaly="drop" if anomalous else None,
                anomaly_mask=None if mask is None else mask.tolist(),
            )
            fmt.write_episode(root / split, f"ep{e:03d}", frames, labels)
    fmt.write_manifest(root, {"name": "tiny", "phase_names": names})
    cfg = models.ModelConfig(image_size=size, light_width=8, embedding_size=16, context_stride=2)
    ckpt.save_checkpoint(
        root / "ckpt.pt", model=models.build_model(cfg), step=0, config={"model": cfg.to_dict()}
    )
    return root / "ckpt.pt"


@pytest.mark.slow
def test_evaluate_cli_writes_metrics_and_reports(tmp_path, capsys):
    from tcc_model import evaluate

    checkpoint = _tiny_dataset(tmp_path / "data")
    out = tmp_path / "eval"
    rc = evaluate.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--dataset",
            f"folder:{tmp_path / 'data'}",
            "--out",
            str(out),
            "--few-shot-episodes",
            "3",
            "--quiet",
        ]
    )
    assert rc == 0
    result = json.loads((out / "metrics.json").read_text())
    metrics, config = result["metrics"], result["config"]
    assert metrics["num_videos"] == {"train": 4, "val": 3}  # the anomalous episode is excluded
    assert metrics["kendalls_tau"]["val"]["num_pairs"] == 6
    assert set(metrics["phase_classification"]) == {"0.1", "0.5", "1.0"}
    assert metrics["phase_classification"]["0.1"]["num_train_videos"] == 1
    assert metrics["few_shot"]["5"]["skipped"].startswith("only 4 training videos")
    assert -1.0 <= result["headline"]["kendalls_tau"] <= 1.0
    assert config["stride"] == 2 and config["versions"]["sklearn"]
    for name in (
        "summary.md",
        "embeddings.npz",
        "similarity.png",
        "embeddings_pca.png",
        "progress_curves.png",
        "synchronized.mp4",
    ):
        assert (out / name).stat().st_size > 0, name
    assert "normal episodes only" in (out / "summary.md").read_text().lower()
    with np.load(out / "embeddings.npz") as npz:
        assert npz["val/ep000"].shape[1] == 16

    from tcc_model.cli import run_main

    capsys.readouterr()
    missing = ["--checkpoint", str(tmp_path / "missing.pt"), "--dataset", "x"]
    assert run_main(evaluate.main, missing) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --checkpoint") and "does not exist" in err[0]


# ------------------------------------------------------------------------------ baselines script


def _baselines_module():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines.py"
    spec = importlib.util.spec_from_file_location("baselines", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("baselines", module)  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_baselines_table_aggregates_seeds():
    import argparse

    bl = _baselines_module()
    runs = [
        {"headline": {"classification_100": 0.8, "kendalls_tau": 0.5, "few_shot_1": None}},
        {"headline": {"classification_100": 0.9, "kendalls_tau": 0.7, "few_shot_1": None}},
    ]
    args = argparse.Namespace(dataset="sim_pouring", steps=10, seeds=[0, 1])
    table = bl.markdown_table({"light": {"tcc": runs}}, args)
    row = next(line for line in table.splitlines() if line.startswith("| tcc |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "85.00 ± 5.00"  # cls 100%, percent
    assert cells[4] == "n/a"  # few-shot missing in every seed
    assert cells[6] == "0.6000 ± 0.1000" and cells[7] == "2"


@pytest.mark.slow
def test_baselines_subset_keeps_the_first_normal_videos(tmp_path):
    pytest.importorskip("tcc_model.data.format", reason="needs the dataset format module")
    _tiny_dataset(tmp_path / "data")
    bl = _baselines_module()
    subset = bl._subset_dataset(tmp_path / "data", 0.5, tmp_path / "subset")
    kept = sorted(p.name for p in (subset / "train").glob("*.json"))
    assert kept == ["ep000.json", "ep001.json"]  # int(0.5 * 4) normal videos, in order
    assert (subset / "val" / "ep000.json").is_file()


@pytest.mark.slow
def test_evaluate_reports_on_the_split_it_is_asked_for(tmp_path):
    from tcc_model import evaluate

    checkpoint = _tiny_dataset(tmp_path / "data")
    out = tmp_path / "eval"
    args = ["--checkpoint", str(checkpoint), "--dataset", f"folder:{tmp_path / 'data'}"]
    args += ["--out", str(out), "--few-shot-episodes", "2", "--no-video", "--quiet"]
    assert evaluate.main([*args, "--eval-split", "train"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["config"]["splits"] == {"train": "train", "val": "train"}
    assert result["metrics"]["num_videos"] == {"train": 4, "val": 4}  # 4 normal train videos
    assert "Reported numbers are on **train**" in (out / "summary.md").read_text()
    from tcc_model.cli import run_main

    assert run_main(evaluate.main, [*args, "--eval-split", "nosuchsplit", "--overwrite"]) == 2


@pytest.mark.slow
def test_evaluate_never_overwrites_a_report_and_takes_another_eval_dataset(tmp_path, capsys):
    import shutil

    from tcc_model import evaluate
    from tcc_model.cli import run_main

    checkpoint = _tiny_dataset(tmp_path / "data")
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "data", other)
    for labels in (other / "val").glob("*.json"):  # another dataset: one normal val video less
        if labels.stem == "ep000":
            labels.unlink()
            (other / "val" / "ep000.mp4").unlink()
    base = ["--checkpoint", str(checkpoint), "--dataset", f"folder:{tmp_path / 'data'}"]
    base += ["--no-video", "--quiet", "--protocols", "tau,classification"]
    # default output: the run's eval/, then eval-2/ (the first report stays as it was)
    assert run_main(evaluate.main, base) == 0
    first = (tmp_path / "data" / "eval" / "metrics.json").read_text()
    assert run_main(evaluate.main, [*base, "--eval-dataset", f"folder:{other}"]) == 0
    assert (tmp_path / "data" / "eval" / "metrics.json").read_text() == first
    second = json.loads((tmp_path / "data" / "eval-2" / "metrics.json").read_text())
    assert second["config"]["eval_dataset"] == f"folder:{other}"
    assert second["metrics"]["num_videos"] == {"train": 4, "val": 2}
    assert second["metrics"]["few_shot"] is None and second["metrics"]["phase_progression"] is None
    assert second["metrics"]["phase_classification"]["0.1"]["value"] is not None
    assert "wrote: report " in capsys.readouterr().out
    # an explicit --out holding a report: refused, then replaced with --overwrite
    out = ["--out", str(tmp_path / "data" / "eval")]
    assert run_main(evaluate.main, [*base, *out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "data" / "eval" / "metrics.json").read_text() == first
    tau_only = [*base[:-2], "--protocols", "tau", *out, "--overwrite"]
    assert run_main(evaluate.main, tau_only) == 0
    metrics = json.loads((tmp_path / "data" / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["num_videos"]["train"] == 0  # tau alone embeds no training videos
    assert metrics["kendalls_tau"]["val"]["num_pairs"] == 6
    assert metrics["phase_classification"] is None


def test_evaluate_rejects_an_unknown_protocol(capsys):
    from tcc_model import evaluate

    with pytest.raises(SystemExit):
        evaluate._parse_args(["--checkpoint", "c.pt", "--dataset", "d", "--protocols", "tau,fast"])
    assert "tau,classification,few_shot,progression" in capsys.readouterr().err
