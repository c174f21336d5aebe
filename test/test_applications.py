"""Alignment (NN/DTW), annotation transfer, retrieval, anomaly scores and visual reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tcc_model import applications as app
from tcc_model import visualize as vis
from tcc_model.align import (
    align_embeddings,
    dtw,
    dtw_alignment,
    mapping_records,
    side_by_side,
    write_mapping,
)


def _trajectory(num_frames: int, seed: int = 0) -> np.ndarray:
    """A random walk in 8-D: distinct, temporally smooth frames."""
    return np.cumsum(np.random.default_rng(seed).normal(size=(num_frames, 8)), axis=0)


def _warp(num_src: int, num_dst: int, seed: int = 1) -> np.ndarray:
    """Non-decreasing index map of ``num_dst`` frames that visits every source frame."""
    rng = np.random.default_rng(seed)
    extra = np.sort(rng.integers(0, num_src, num_dst - num_src))
    return np.sort(np.concatenate([np.arange(num_src), extra]))


# ------------------------------------------------------------------------------ DTW


def test_dtw_recovers_a_known_warp_with_zero_cost():
    ref = _trajectory(40)
    warp = _warp(40, 70)
    cost, path = dtw(ref[warp], ref)
    assert cost == pytest.approx(0.0, abs=1e-9)
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (69, 39)
    assert np.all(np.diff(path, axis=0) >= 0) and np.all(np.diff(path, axis=0).sum(1) >= 1)
    np.testing.assert_array_equal(dtw_alignment(ref[warp], ref), warp)


def test_dtw_cost_matches_brute_force_recursion():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 2)), rng.normal(size=(9, 2))
    cost = ((a[:, None] - b[None]) ** 2).sum(-1)
    acc = np.full((7, 10), np.inf)
    acc[0, 0] = 0
    for i in range(1, 7):
        for j in range(1, 10):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    total, path = dtw(a, b)
    assert total == pytest.approx(acc[6, 9])
    assert cost[path[:, 0], path[:, 1]].sum() == pytest.approx(total)


def test_dtw_is_monotone_where_nn_is_not():
    ref = _trajectory(30)
    query = ref[::-1][::3]  # reversed: NN follows it backwards, DTW cannot
    assert np.all(np.diff(align_embeddings(query, ref, "nn")) < 0)
    assert np.all(np.diff(align_embeddings(query, ref, "dtw")) >= 0)
    with pytest.raises(ValueError, match="method"):
        align_embeddings(query, ref, "soft")


# ------------------------------------------------------------------------------ transfer


@pytest.mark.parametrize("method", ["nn", "dtw"])
def test_annotation_transfer_on_time_warped_copy_is_exact(method):
    src = _trajectory(50)
    src_phases = np.repeat([0, 1, 2, 3, 4], 10)
    warp = _warp(50, 80, seed=4)
    dst = src[warp] + 1e-6 * np.random.default_rng(5).normal(size=(80, 8))
    np.testing.assert_array_equal(
        app.transfer_labels(src, src_phases, dst, method), src_phases[warp]
    )
    # Any per-frame signal: here a 2-D progress vector.
    signal = np.stack([np.linspace(0, 1, 50), np.arange(50)], axis=1)
    np.testing.assert_allclose(app.transfer_labels(src, signal, dst, method), signal[warp])
    result = app.transfer_accuracy([src], [src_phases], [dst], [src_phases[warp]], method)
    assert result["mean_accuracy"] == pytest.approx(1.0) and result["num_pairs"] == 1


def test_transfer_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="one entry per source frame"):
        app.transfer_labels(_trajectory(10), np.zeros(9), _trajectory(5))


# ------------------------------------------------------------------------------ retrieval


def test_retrieve_returns_the_nearest_frames_in_order():
    candidates = [np.array([[0.0], [10.0], [3.0]]), np.array([[1.0], [7.0]])]
    hits = app.retrieve(np.array([2.4]), candidates, k=3)
    # distances: v0f2 = 0.6, v1f0 = 1.4, v0f0 = 2.4
    np.testing.assert_array_equal(hits.video, [0, 1, 0])
    np.testing.assert_array_equal(hits.frame, [2, 0, 0])
    np.testing.assert_allclose(hits.distance, [0.6, 1.4, 2.4])
    assert len(app.retrieve(np.array([0.0]), candidates, k=50).video) == 5


def test_retrieval_precision_counts_matching_phases():
    cand = [np.array([[0.0], [0.1], [5.0], [5.1]])]
    cand_y = [np.array([0, 0, 1, 1])]
    query = [np.array([[0.05], [5.05]])]
    p = app.retrieval_precision(query, [np.array([0, 1])], cand, cand_y, ks=(1, 2, 3))
    assert p == {1: 1.0, 2: 1.0, 3: pytest.approx(2 / 3)}


# ------------------------------------------------------------------------------ anomaly


def test_anomaly_scores_are_distances_to_typical_frames():
    typical = [_trajectory(30, seed=s) for s in range(3)]
    run = typical[1].copy()
    run[10:15] += 50.0  # off every typical trajectory
    scores = app.anomaly_scores(run, typical)
    assert np.all(scores[:10] < 1e-6) and np.all(scores[15:] < 1e-6)
    assert np.all(scores[10:15] > 10.0)
    mask = np.zeros(30, dtype=int)
    mask[10:15] = 1
    normal = typical[2] + 0.01
    res = app.anomaly_auroc(typical, [run, normal], [mask, None], ["drop", None])
    assert res["frame_auroc"] == pytest.approx(1.0)
    assert res["run_auroc"] == pytest.approx(1.0)
    assert res["per_type"]["drop"]["frame_auroc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="typical_embs_list is empty"):
        app.anomaly_scores(run, [])


# ------------------------------------------------------------------------------ outputs


def test_side_by_side_and_mapping_files(tmp_path):
    frames_a = np.zeros((4, 8, 6, 3), np.uint8)
    frames_b = np.stack([np.full((8, 10, 3), 10 * i, np.uint8) for i in range(3)])
    mapping = np.array([0, 0, 2, 1])
    out = side_by_side(frames_a, frames_b, mapping)
    assert out.shape == (4, 8, 16, 3)
    assert np.all(out[:, :, 6:, 0] == np.array([0, 0, 20, 10])[:, None, None])
    records = mapping_records(mapping, fps_a=10.0, fps_b=5.0)
    assert records[2] == {"frame_a": 2, "frame_b": 2, "time_a": 0.2, "time_b": 0.4}
    json_path, csv_path = write_mapping(tmp_path, records, {"method": "nn"})
    assert json.loads(json_path.read_text())["mapping"][3]["frame_b"] == 1
    assert csv_path.read_text().splitlines()[1] == "0,0,0.0,0.0"


def test_synchronized_grid_shows_aligned_frames():
    ref_embs = _trajectory(12)
    warp = _warp(12, 20, seed=6)
    other_embs = ref_embs[warp]
    # Frame content encodes the reference time step shown, so alignment is checkable per tile.
    ref_frames = np.stack([np.full((6, 8, 3), t, np.uint8) for t in range(12)])
    other_frames = ref_frames[warp]
    grid = vis.synchronized_grid(ref_frames, ref_embs, [(other_frames, other_embs)], "dtw")
    assert grid.shape == (12, 6, 16, 3)  # 2 tiles side by side
    np.testing.assert_array_equal(grid[:, 3, 12, 0], np.arange(12))


def test_plots_are_written(tmp_path):
    videos = [_trajectory(20, seed=s) for s in range(3)]
    phases = [np.repeat([0, 1], 10)] * 3
    paths = [
        vis.plot_similarity_matrices([(videos[0], videos[1])], tmp_path / "sim.png"),
        vis.plot_embeddings_2d(videos, tmp_path / "emb.png", phases, ["a", "b"]),
        vis.plot_embeddings_2d(videos, tmp_path / "emb_time.png"),
        vis.plot_progress_curves(videos, videos[0], tmp_path / "prog.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:4] == b"\x89PNG"
    progress = vis.aligned_progress(videos[0], videos[0])
    np.testing.assert_allclose(progress, np.linspace(0, 1, 20))


@pytest.mark.slow
def test_align_cli_writes_video_and_mapping(tmp_path, capsys):
    fmt = pytest.importorskip("tcc_model.data.format", reason="needs the dataset format module")
    models = pytest.importorskip("tcc_model.models", reason="needs the model module")
    ckpt = pytest.importorskip("tcc_model.checkpoint", reason="needs the checkpoint module")
    pytest.importorskip("tcc_model.embed", reason="needs the embedding module")
    from tcc_model import align

    def square_video(num_frames: int) -> np.ndarray:
        frames = np.zeros((num_frames, 32, 32, 3), np.uint8)
        for t, x in enumerate(np.linspace(2, 22, num_frames).astype(int)):
            frames[t, 8:16, x : x + 8] = 255
        return frames

    fmt.write_video(tmp_path / "a.mp4", square_video(18), fps=10.0)
    fmt.write_video(tmp_path / "b.mp4", square_video(12), fps=10.0)
    cfg = models.ModelConfig(image_size=32, light_width=8, embedding_size=16, context_stride=2)
    ckpt.save_checkpoint(
        tmp_path / "m.pt", model=models.build_model(cfg), step=0, config={"model": cfg.to_dict()}
    )
    out = tmp_path / "out"
    args = [
        str(tmp_path / "a.mp4"),
        str(tmp_path / "b.mp4"),
        "--checkpoint",
        str(tmp_path / "m.pt"),
    ]
    assert align.main([*args, "--method", "dtw", "--out", str(out)]) == 0
    mapping = json.loads((out / "mapping.json").read_text())["mapping"]
    frames_b = [row["frame_b"] for row in mapping]
    assert len(frames_b) == 18 and frames_b[0] == 0 and frames_b[-1] == 11
    assert np.all(np.diff(frames_b) >= 0)  # DTW is monotone
    assert len((out / "mapping.csv").read_text().splitlines()) == 19
    assert fmt.read_video(out / "side_by_side.mp4").shape == (18, 32, 64, 3)
    from tcc_model.cli import run_main

    capsys.readouterr()
    assert run_main(align.main, [str(tmp_path / "nope.mp4"), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.mp4: video not found" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "bundle.yaml").write_text("{}")
    assert run_main(align.main, [*args[:3], str(tmp_path / "bundle")]) == 2
    assert "is a bundle folder, not a training checkpoint" in capsys.readouterr().err


def test_applications_cli_errors_are_one_line(tmp_path, capsys):
    from types import SimpleNamespace

    from tcc_model.cli import run_main
    from tcc_model.errors import DatasetError

    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "bundle.yaml").write_text("{}")
    args = ["transfer", "--checkpoint", str(tmp_path / "bundle"), "--dataset", "sim_pouring"]
    assert run_main(app.main, args) == 2
    err = capsys.readouterr().err
    assert "is a bundle folder, not a training checkpoint" in err and err.count("\n") == 1
    unlabelled = [SimpleNamespace(anomaly=None, phase_ids=None, embs=_trajectory(5))]
    ns = SimpleNamespace(command="transfer", dataset="folder:x")
    with pytest.raises(DatasetError, match="needs phase-labelled normal videos in train and val"):
        app._measure(ns, unlabelled, unlabelled, "val")
