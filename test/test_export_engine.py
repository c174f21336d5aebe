"""Bundle export, verification and inference backends (tiny light model at 64², CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper

from tcc_model import bench_engine, export
from tcc_model.bundle import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    BundleError,
    compute_bundle_id,
    read_manifest,
    register_files,
)
from tcc_model.cli import run_main
from tcc_model.engine import _tensorrt_available, load_bundle
from tcc_model.models import build_model
from tcc_model.preprocess import PreprocessConfig, context_indices, resize_frames

SIZE = 64
MODEL_CFG = {
    "encoder": "light",
    "head": "light",
    "image_size": SIZE,
    "light_width": 8,
    "embedding_size": 16,
    "head_channels": 16,
    "fc_channels": 32,
    "context_frames": 2,
    "context_stride": 3,
}
CPU_BACKENDS = ("onnxruntime", "torch")


def _tiny_model() -> torch.nn.Module:
    """Light model whose BatchNorm statistics were fitted to frames, so outputs track the input."""
    torch.manual_seed(0)
    model = build_model(dict(MODEL_CFG))
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the fitting batches
    frames = resize_frames(_camera_frames(16, seed=9), SIZE)
    with torch.no_grad():
        model.train()(torch.from_numpy(frames).reshape(2, 8, SIZE, SIZE, 3))
    return model.eval()


def _camera_frames(n: int, h: int = 120, w: int = 160, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, h // 10, w // 10, 3), dtype=np.uint8)
    return np.stack(
        [
            np.asarray(
                torch.nn.functional.interpolate(
                    torch.from_numpy(c).permute(2, 0, 1)[None].float(),
                    size=(h, w),
                    mode="bilinear",
                    align_corners=False,
                )[0]
                .permute(1, 2, 0)
                .round()
                .clamp(0, 255)
                .byte()
            )
            for c in coarse
        ]
    )


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _tiny_model()


@pytest.fixture(scope="module")
def bundle_dir(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export.export_bundle(
        model,
        out,
        export.ExportOptions(exporter="torchscript", quantize_int8=True),
        export.ExportInputs(
            phase_names=["reach", "pour"],
            training_config={"algo": "tcc"},
            calibration_frames=resize_frames(_camera_frames(32, seed=5), SIZE),
        ),
    )
    return out


@pytest.fixture()
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def _reference(model: torch.nn.Module, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return export.torch_embed_frames(
        model, resize_frames(frames, SIZE), MODEL_CFG["context_frames"], MODEL_CFG["context_stride"]
    )


# ------------------------------------------------------------------------------------------------
# Export -> load -> same embeddings


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backends_match_pytorch(model, bundle_dir, backend):
    engine = load_bundle(bundle_dir, backend=backend, device="cpu")
    assert engine.backend == backend
    frames = _camera_frames(12)
    ref_feats, ref_emb = _reference(model, frames)
    tol = engine.manifest["verification"]["tolerance_abs"]
    np.testing.assert_allclose(engine.embed_frames(frames, chunk=5), ref_emb, rtol=0, atol=tol)
    np.testing.assert_allclose(engine.encode_frames(frames), ref_feats, rtol=0, atol=1e-4)
    assert ref_emb.std(axis=0).mean() > 10 * tol, "test model must react to its input"


def test_tensorrt_backend(model, bundle_dir):
    reason = _tensorrt_available(read_manifest(bundle_dir))
    if reason:
        pytest.skip(f"tensorrt backend unavailable: {reason}")
    engine = load_bundle(bundle_dir, backend="tensorrt")
    frames = _camera_frames(6)
    np.testing.assert_allclose(engine.embed_frames(frames), _reference(model, frames)[1], atol=2e-2)


def test_auto_backend_prefers_onnxruntime_on_cpu(bundle_dir):
    assert load_bundle(bundle_dir, backend="auto", device="cpu").backend == "onnxruntime"


def test_int8_variant_is_quantised_and_close(model, bundle_dir):
    manifest = read_manifest(bundle_dir)
    int8 = manifest["variants"]["int8"]
    graph = onnx.load(str(bundle_dir / int8["encoder"])).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    assert int8["accuracy"]["max_abs_diff_embeddings"] >= 0
    engine = load_bundle(bundle_dir, backend="onnxruntime", device="cpu", variant="int8")
    frames = _camera_frames(8)
    ref_feats, _ = _reference(model, frames)
    feats = engine.encode_frames(frames)
    rel_rms = np.sqrt(np.mean((feats - ref_feats) ** 2) / np.mean(ref_feats**2))
    # quantised (not bit-identical) yet close: the 8-channel test model loses ~13% RMS to uint8
    # activations with ONNX Runtime 1.31 (MinMax, Percentile and signed activations alike)
    assert 0 < rel_rms < 0.2
    n = len(feats)
    corr = np.corrcoef(feats.reshape(n, -1), ref_feats.reshape(n, -1))[:n, n:]
    assert np.diag(corr).min() > 0.95  # each int8 frame matches its own fp32 frame ...
    assert (corr.argmax(axis=1) == np.arange(n)).all()  # ... better than any other frame


def test_embed_frames_encodes_each_frame_once_with_causal_context(bundle_dir):
    engine = load_bundle(bundle_dir, backend="onnxruntime", device="cpu")
    encoded = []
    run_encoder = engine._runner.encode
    engine._runner.encode = lambda x: (encoded.append(len(x)), run_encoder(x))[1]
    frames = _camera_frames(11)
    embeddings = engine.embed_frames(frames, chunk=4)
    assert sum(encoded) == len(frames)
    features = engine.encode_frames(frames)
    k, stride = engine.preprocess.context_frames, engine.preprocess.context_stride
    manual = engine.embed(features[context_indices(np.arange(len(frames)), k, stride)])
    np.testing.assert_allclose(embeddings, manual, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_preprocessing_parity_camera_frame(model, bundle_dir, backend):
    """A 480x640 camera frame gives the encoder exactly the bytes training would see."""
    engine = load_bundle(bundle_dir, backend=backend, device="cpu")
    frame = _camera_frames(1, 480, 640)[0]
    with torch.inference_mode():
        expected = model.encoder(torch.from_numpy(resize_frames(frame[None], SIZE))).numpy()
    np.testing.assert_allclose(engine.encode_frames(frame), expected, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Manifest


def test_manifest_round_trip(model, bundle_dir):
    manifest = read_manifest(bundle_dir)
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["bundle_id"] == compute_bundle_id(manifest["files"])
    assert PreprocessConfig.from_dict(manifest["preprocess"]) == model.cfg.preprocess_config()
    assert manifest["preprocess"]["color_order"] == "rgb"
    assert manifest["embedding_size"] == MODEL_CFG["embedding_size"]
    assert manifest["phase_names"] == ["reach", "pour"]
    assert manifest["training"] == {"algo": "tcc"}
    assert {"torch", "onnx", "onnxruntime", "tcc_model"} <= set(manifest["versions"])
    ver = manifest["verification"]
    assert ver["passed"] and ver["max_abs_diff_embeddings"] <= ver["tolerance_abs"]
    assert ver["tolerance_abs"] == pytest.approx(1e-3 * ver["embedding_scale_max_abs"])
    engine = load_bundle(bundle_dir, backend="onnxruntime", device="cpu")
    assert engine.bundle_id == manifest["bundle_id"]
    assert engine.feature_shape == tuple(manifest["feature_shape"])
    assert engine.preprocess.image_size == SIZE


def test_registering_references_keeps_bundle_id(bundle_copy):
    before = read_manifest(bundle_copy)["bundle_id"]
    (bundle_copy / "references.json").write_text(json.dumps({"bundle_id": before}))
    after = register_files(bundle_copy, ["references.json"])
    assert after["bundle_id"] == before
    assert read_manifest(bundle_copy)["files"]["references.json"]["role"] == "reference"
    with pytest.raises(ValueError, match="model file"):
        register_files(bundle_copy, ["encoder.onnx"], role="derived")
    (bundle_copy / "references.json").write_text("{}")  # rebuilt outside register_files
    with pytest.raises(BundleError, match=r"references\.json: sha256 mismatch.*rebuild the ref"):
        read_manifest(bundle_copy)
    register_files(bundle_copy, ["references.json"])  # re-registering a rebuilt file is allowed
    assert read_manifest(bundle_copy)["bundle_id"] == before


# ------------------------------------------------------------------------------------------------
# Rejections


def test_missing_file_rejected(bundle_copy):
    (bundle_copy / "head.onnx").unlink()
    with pytest.raises(BundleError, match=r"head\.onnx: listed in bundle.yaml but missing"):
        load_bundle(bundle_copy, backend="onnxruntime")


def test_missing_manifest_rejected(bundle_copy):
    (bundle_copy / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(bundle_copy)


def test_sha256_mismatch_rejected(bundle_copy):
    path = bundle_copy / "encoder.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"encoder\.onnx: sha256 mismatch"):
        load_bundle(bundle_copy, backend="onnxruntime")


def test_newer_format_version_rejected(bundle_copy):
    manifest = yaml.safe_load((bundle_copy / MANIFEST_NAME).read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (bundle_copy / MANIFEST_NAME).write_text(yaml.safe_dump(manifest))
    with pytest.raises(BundleError, match="newer than this tcc_model supports"):
        load_bundle(bundle_copy)


def test_unknown_backend_and_variant_rejected(bundle_dir):
    with pytest.raises(BundleError, match="backend must be one of"):
        load_bundle(bundle_dir, backend="openvino")
    with pytest.raises(BundleError, match="variant must be one of"):
        load_bundle(bundle_dir, variant="fp8")
    with pytest.raises(BundleError, match="fp32 weights only"):
        load_bundle(bundle_dir, backend="torch", variant="int8")
    if _tensorrt_available(read_manifest(bundle_dir)):
        with pytest.raises(BundleError, match="'tensorrt' is unavailable"):
            load_bundle(bundle_dir, backend="tensorrt")


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 48, 48, 3), np.float32), "must be uint8"),
        (np.zeros((2, 48, 48, 4), np.uint8), "3 channels"),
        (np.zeros((48, 48), np.uint8), "3 channels"),
        (np.zeros((0, 48, 48, 3), np.uint8), "empty"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_bad_frames_rejected(bundle_dir, frames, message):
    engine = load_bundle(bundle_dir, backend="onnxruntime", device="cpu")
    with pytest.raises(ValueError, match=message):
        engine.encode_frames(frames)


def test_bad_context_features_rejected(bundle_dir):
    engine = load_bundle(bundle_dir, backend="onnxruntime", device="cpu")
    c, h, w = engine.feature_shape
    with pytest.raises(ValueError, match="context_features must have shape"):
        engine.embed(np.zeros((1, 3, c, h, w), np.float32))  # k = 3, bundle has k = 2
    with pytest.raises(ValueError, match="float32"):
        engine.embed(np.zeros((1, 2, c, h, w), np.int64))


def test_failed_parity_check_writes_no_bundle(model, tmp_path, monkeypatch):
    from tcc_model.export import verify

    real = verify.ort_embed_frames

    def perturbed(*args, **kwargs):
        feats, emb = real(*args, **kwargs)
        return feats, emb + 0.01 * np.abs(emb).max()

    monkeypatch.setattr(verify, "ort_embed_frames", perturbed)
    out = tmp_path / "bad"
    with pytest.raises(export.ExportError, match="ONNX and PyTorch embeddings differ"):
        export.export_bundle(model, out, exporter="torchscript")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # temporary directory removed too


def test_export_refuses_non_empty_directory(model, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(export.ExportError, match="not empty"):
        export.export_bundle(model, tmp_path, exporter="torchscript")
    with pytest.raises(export.ExportError, match="not a bundle directory"):
        export.export_bundle(model, tmp_path, exporter="torchscript", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_tensorrt_export_fails_clearly_without_tensorrt(model, tmp_path):
    try:
        import tensorrt  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("TensorRT and a GPU are present")
    except ImportError:
        pass
    with pytest.raises(export.ExportError, match="--tensorrt needs"):
        export.export_bundle(model, tmp_path / "b", tensorrt=True)


def test_cli_reports_missing_checkpoint(tmp_path, capsys):
    argv = ["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b")]
    assert run_main(export.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --checkpoint") and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "options,needle",
    [
        (dict(fp16=True), "--fp16 only applies"),
        (dict(exporter="tflite"), "exporter must be one of"),
        (dict(tolerance_rel=0.0), "--tolerance must be > 0"),
        (dict(tolerance_rel=float("nan")), "--tolerance must be > 0"),
        (dict(opset=3), "--opset must be between"),
    ],
)
def test_contradictory_options_are_refused_before_any_work(model, tmp_path, options, needle):
    with pytest.raises(export.ExportError, match=needle):
        export.export_bundle(model, tmp_path / "b", export.ExportOptions(**options))
    assert not (tmp_path / "b").exists()


def test_former_keyword_arguments_map_onto_options_and_inputs(model, tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['opsett'\\]"):
        export.export_bundle(model, tmp_path / "b", opsett=18)
    with pytest.raises(TypeError, match="either options/inputs or"):
        export.export_bundle(model, tmp_path / "b", export.ExportOptions(), opset=18)


def test_export_help_is_fast_and_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tcc_model.export.cli import _parser\n"
        "from tcc_model.export import synthetic_frames, ExportOptions\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run(
        [sys.executable, "-m", "tcc_model.export", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--opset" in proc.stdout and "default 18" in proc.stdout


@pytest.mark.slow
def test_cli_exports_checkpoint_with_default_dynamo_exporter(model, tmp_path, capsys):
    from tcc_model.checkpoint import save_checkpoint

    ckpt = save_checkpoint(
        tmp_path / "last.pt",
        model=model,
        step=7,
        config={"model": model.cfg.to_dict(), "algo": "tcc"},
    )
    out = tmp_path / "bundle"
    assert export.main(["--checkpoint", str(ckpt), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == f"wrote: bundle {out}"
    assert "exporting the ONNX graphs: done in" in captured.err
    assert "Warning" not in captured.err and "warning" not in captured.err  # default opset 18
    manifest = read_manifest(out)
    assert manifest["export"]["exporter"] == "dynamo"
    assert manifest["training"]["step"] == 7 and manifest["training"]["algo"] == "tcc"
    frames = _camera_frames(9)
    engine = load_bundle(out, backend="onnxruntime", device="cpu")
    np.testing.assert_allclose(
        engine.embed_frames(frames),
        _reference(model, frames)[1],
        rtol=0,
        atol=manifest["verification"]["tolerance_abs"],
    )


# ------------------------------------------------------------------------------------------------
# Benchmark helpers


def _tiny_graph(path: Path) -> None:
    """Conv 3->4 (3x3, pad 1) on 8x8, then Gemm 256->5: FLOPs counted by hand below."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    g = helper.make_tensor("g", TensorProto.FLOAT, [256, 5], np.zeros(1280, np.float32))
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], np.array([-1, 256], np.int64))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("Gemm", ["r", "g"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [w, g, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_flop_counter_counts_conv_and_gemm(tmp_path):
    path = tmp_path / "tiny.onnx"
    _tiny_graph(path)
    conv = 2 * (4 * 8 * 8) * (3 * 3 * 3)  # 2 * output elements * MACs per output
    gemm = 2 * 256 * 5
    assert bench_engine.count_flops(path) == conv + gemm


def test_flop_counter_on_exported_encoder_matches_layer_sum(model, bundle_dir):
    expected = 0
    shape = torch.zeros(1, 3, SIZE, SIZE)
    x = model.encoder.normalize(shape.permute(0, 2, 3, 1))
    for layer in model.encoder.trunk:
        y = layer(x)
        if isinstance(layer, torch.nn.Conv2d):
            expected += 2 * y.numel() * layer.weight[0].numel()
        x = y
    assert bench_engine.count_flops(bundle_dir / "encoder.onnx") == expected


def test_benchmark_runs_and_reports(bundle_dir, tmp_path):
    report = bench_engine.run_benchmark(
        bundle_dir,
        backends=["onnxruntime", "torch"],
        threads=[1],
        batches=[1, 2],
        repeats=3,
        warmup=1,
        gemm_size=256,
    )
    rows = report["results"]
    assert {(r["backend"], r["variant"]) for r in rows} == {
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("torch", "fp32"),
    }
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in rows)
    assert report["gemm_peak_gflops"]["1"] > 0
    table = bench_engine.markdown_table(report)
    assert table.count("\n") == len(rows) + 1
    out = tmp_path / "bench.json"
    assert (
        bench_engine.main(
            [
                "--bundle",
                str(bundle_dir),
                "--backends",
                "onnxruntime",
                "--threads",
                "1",
                "--batches",
                "1",
                "--repeats",
                "2",
                "--gemm-size",
                "128",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["results"]


def test_onnxruntime_path_does_not_import_torch(bundle_dir: Path) -> None:
    """The live node loads bundles through ONNX Runtime without paying for a torch import."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tcc_model.engine import load_bundle\n"
        "import numpy as np\n"
        f"engine = load_bundle({str(bundle_dir)!r}, backend='auto')\n"
        "size = engine.preprocess.image_size\n"
        "engine.embed_frames(np.zeros((3, size, size, 3), np.uint8))\n"
        "assert engine.backend.startswith('onnxruntime'), engine.backend\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
