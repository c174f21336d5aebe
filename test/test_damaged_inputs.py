"""Every command that reads a damaged artefact exits with one ``error:`` line naming the file.

Table-driven: one line of :data:`DAMAGES` per kind of damage; every command that reads that
artefact family (:data:`COMMANDS`) runs on it, as ``python -m`` would (through
``test/cli_harness.py``, all in one interpreter to stay fast). The artefacts come from one small
untrained export made once per session.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tcc_model.bundle import file_entry, write_manifest
from tcc_model.checkpoint import save_checkpoint
from tcc_model.data.format import EpisodeLabels, key_events_from_phase_ids, write_episode
from tcc_model.export import ExportInputs, ExportOptions, export_bundle
from tcc_model.models import build_model

HERE = Path(__file__).resolve().parent
SIZE, PHASES = 32, ["reach", "pour", "place"]
MODEL_CFG = {
    "encoder": "light",
    "head": "light",
    "image_size": SIZE,
    "light_width": 4,
    "embedding_size": 8,
    "head_channels": 8,
    "fc_channels": 16,
    "context_frames": 2,
    "context_stride": 2,
}


# ------------------------------------------------------------------------------------------------
# The good artefacts (once per session)


def _episode(n: int, seed: int) -> tuple[np.ndarray, EpisodeLabels]:
    rng = np.random.default_rng(seed)
    s = np.linspace(0, 1, n)
    colour = np.stack([40 + 170 * s, 200 - 150 * s**2, 120 + 80 * np.sin(3 * s)], axis=1)
    frames = np.repeat(colour[:, None, None, :], SIZE, 1).repeat(SIZE, 2)
    frames = np.clip(frames + rng.normal(size=frames.shape), 0, 255).astype(np.uint8)
    ids = np.minimum(np.arange(n) * 3 // n, 2).tolist()
    labels = EpisodeLabels(
        video="",
        fps=10.0,
        num_frames=n,
        phase_names=PHASES,
        phase_ids=ids,
        key_events=key_events_from_phase_ids(ids, PHASES),
    )
    return frames, labels


def _tfrecord(path: Path) -> None:
    from test_tfrecord import tcc_record, tfrecord

    path.write_bytes(tfrecord([tcc_record("v", [0, 1, 1])]))


def _bag(path: Path) -> None:
    from tcc_ros.bag_io import BagWriter
    from tcc_ros.ground_truth import ground_truth_fields

    stamp = 1_000_000_000
    with BagWriter(path, storage="mcap") as writer:
        for name, seed in (("ep0", 1), ("ep1", 2)):
            frames, labels = _episode(16, seed)
            writer.write_marker(stamp, name)
            for frame, truth in zip(frames, ground_truth_fields(labels, name)):
                writer.write_frame(stamp, frame, truth)
                stamp += 100_000_000
            stamp += 2_000_000_000


def _run_module(*argv: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One artefact per family: bundle (with references), checkpoint, dataset, bag, TFRecord."""
    root = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    model = build_model(dict(MODEL_CFG)).eval()
    export_bundle(
        model,
        root / "bundle",
        ExportOptions(exporter="torchscript"),
        ExportInputs(phase_names=PHASES),
    )
    save_checkpoint(root / "last.pt", model=model, step=1, config={"model": model.cfg.to_dict()})
    for split, seeds in (("train", (1, 2, 3)), ("val", (4, 5, 6))):
        for seed in seeds:
            frames, labels = _episode(24 + 2 * seed, seed)
            write_episode(root / "data" / split, f"ep{seed}", frames, labels, video_format="png")
    _run_module(
        "tcc_model.reference",
        "--bundle",
        str(root / "bundle"),
        "--dataset",
        f"folder:{root / 'data'}",
        "--false-alarm-rate",
        "0.5",
    )
    _bag(root / "bag")
    _tfrecord(root / "x.tfrecord")
    return {
        "bundle": root / "bundle",
        "references": root / "bundle",
        "bundle_torch": root / "bundle",
        "checkpoint": root / "last.pt",
        "dataset": root / "data",
        "bag": root / "bag",
        "tfrecord": root / "x.tfrecord",
    }


# ------------------------------------------------------------------------------------------------
# Damage helpers


def _yaml_edit(fn: Callable[[dict], object]) -> Callable[[Path], Path]:
    def apply(bundle: Path) -> Path:
        manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
        fn(manifest)
        (bundle / "bundle.yaml").write_text(yaml.safe_dump(manifest))
        return bundle

    return apply


def _rehash(bundle: Path, drop: tuple[str, ...] = ()) -> None:
    """Rewrite the manifest's hashes (a damaged file that the manifest still vouches for)."""
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    files = {k: v for k, v in manifest["files"].items() if k not in drop}
    manifest["files"] = {n: file_entry(bundle, n, e["role"]) for n, e in files.items()}
    write_manifest(bundle, manifest)


def _truncate(name: str, rehash: bool = False, unlist: bool = False) -> Callable[[Path], Path]:
    def apply(path: Path) -> Path:
        target = path / name if path.is_dir() else path
        target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size // 3)])
        if rehash or unlist:
            _rehash(path, drop=(name,) if unlist else ())
        return path

    return apply


def _replace(name: str, data: bytes | Callable[[Path], bytes], rehash=False, unlist=False):
    def apply(path: Path) -> Path:
        target = path / name if path.is_dir() else path
        target.write_bytes(data(path) if callable(data) else data)
        if rehash or unlist:
            _rehash(path, drop=(name,) if unlist else ())
        return path

    return apply


def _unlisted_npz(edit: Callable[[dict], dict]) -> Callable[[Path], Path]:
    """references.npz rewritten with ``edit`` and dropped from the manifest (--no-register)."""

    def apply(bundle: Path) -> Path:
        with np.load(bundle / "references.npz", allow_pickle=False) as npz:
            arrays = edit(dict(npz))
        with open(bundle / "references.npz", "wb") as f:
            np.savez(f, **arrays)
        _rehash(bundle, drop=("references.npz",))
        return bundle

    return apply


def _unlisted_json(edit: Callable[[dict], object]) -> Callable[[Path], Path]:
    def apply(bundle: Path) -> Path:
        meta = json.loads((bundle / "references.json").read_text())
        edit(meta)
        (bundle / "references.json").write_text(json.dumps(meta))
        _rehash(bundle, drop=("references.json",))
        return bundle

    return apply


def _torch_file(payload: object) -> Callable[[Path], Path]:
    def apply(path: Path) -> Path:
        torch.save(payload, path)
        return path

    return apply


def _checkpoint_edit(fn: Callable[[dict], None]) -> Callable[[Path], Path]:
    def apply(path: Path) -> Path:
        ckpt = torch.load(path, weights_only=True)
        fn(ckpt)
        torch.save(ckpt, path)
        return path

    return apply


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"tcc_pickle_payload_ran_{os.getpid()}"


class _Payload:
    """Unpickling this creates MARKER: it must never happen."""

    def __reduce__(self):
        return (pathlib.Path.touch, (MARKER,))


def _label(episode: str, fn: Callable[[dict], None]) -> Callable[[Path], Path]:
    def apply(data: Path) -> Path:
        path = data / "train" / f"{episode}.json"
        labels = json.loads(path.read_text())
        fn(labels)
        path.write_text(json.dumps(labels))
        return data

    return apply


def _frame(episode: str, index: int, data: bytes) -> Callable[[Path], Path]:
    def apply(root: Path) -> Path:
        (root / "train" / episode / f"{index:06d}.png").write_bytes(data)
        return root

    return apply


def _bag_file(fn: Callable[[Path], None]) -> Callable[[Path], Path]:
    def apply(bag: Path) -> Path:
        fn(next(bag.glob("*.mcap")))
        return bag

    return apply


def _flip_byte(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def _other_file(path: Path) -> Path:
    """The family's path replaced by another kind of artefact (a text file)."""
    other = path.parent / f"{path.name}.txt"
    other.write_text("not this kind of file\n")
    return other


@dataclass(frozen=True)
class Damage:
    """One way to damage an artefact of ``family``; ``needle`` must be in the error line."""

    name: str
    family: str
    apply: Callable[[Path], Path]
    needle: str


# fmt: off
DAMAGES = [
    Damage("manifest is binary", "bundle", _replace("bundle.yaml", os.urandom(64)), "bundle.yaml"),
    Damage("manifest is a list", "bundle", _replace("bundle.yaml", b"- a\n- b\n"), "bundle.yaml"),
    Damage("files entries are strings", "bundle", _yaml_edit(lambda m: m.update(files={k: "x" for k in m["files"]})), "bundle.yaml"),  # noqa: E501
    Damage("files entry leaves the folder", "bundle", _yaml_edit(lambda m: m["files"].update({"../x": m["files"]["head.onnx"]})), "bundle.yaml"),  # noqa: E501
    Damage("newer format version", "bundle", _yaml_edit(lambda m: m.update(format_version=99)), "format_version 99"),  # noqa: E501
    Damage("variants missing", "bundle", _yaml_edit(lambda m: m.pop("variants")), "variants"),
    Damage("preprocess not a mapping", "bundle", _yaml_edit(lambda m: m.update(preprocess="x")), "preprocess"),  # noqa: E501
    Damage("encoder.onnx missing", "bundle", lambda b: (b / "encoder.onnx").unlink() or b, "encoder.onnx"),  # noqa: E501
    Damage("encoder.onnx truncated", "bundle", _truncate("encoder.onnx"), "encoder.onnx"),
    Damage("encoder.onnx truncated, hash updated", "bundle", _truncate("encoder.onnx", rehash=True), "encoder.onnx"),  # noqa: E501
    Damage("head.onnx is the encoder graph", "bundle", _replace("head.onnx", lambda b: (b / "encoder.onnx").read_bytes(), rehash=True), "head.onnx"),  # noqa: E501
    Damage("bundle path is a file", "bundle", _other_file, "is a file"),
    Damage("weights truncated, hash updated", "bundle_torch", _truncate("model.safetensors", rehash=True), "model.safetensors"),  # noqa: E501
    Damage("references.npz truncated", "references", _truncate("references.npz"), "references.npz"),  # noqa: E501
    Damage("references.npz truncated, unlisted", "references", _truncate("references.npz", unlist=True), "references.npz"),  # noqa: E501
    Damage("references.npz without embeddings", "references", _unlisted_npz(lambda a: {k: v for k, v in a.items() if "emb" not in k}), "references.npz"),  # noqa: E501
    Damage("references.npz object array", "references", _unlisted_npz(lambda a: {**a, "offsets": np.array([{"x": 1}], dtype=object)}), "references.npz"),  # noqa: E501
    Damage("references.json wrong types", "references", _unlisted_json(lambda m: m.update({k: "x" for k in m})), "references.json"),  # noqa: E501
    Damage("checkpoint truncated", "checkpoint", _truncate(""), "last.pt"),
    Damage("checkpoint garbage", "checkpoint", _replace("", os.urandom(256)), "last.pt"),
    Damage("checkpoint empty", "checkpoint", _replace("", b""), "last.pt"),
    Damage("checkpoint pickles an object", "checkpoint", _torch_file({"format": "tcc_ros.checkpoint", "x": _Payload()}), "pickled Python object"),  # noqa: E501
    Damage("checkpoint holds an object array", "checkpoint", _torch_file({"model": np.array([None, 1], dtype=object)}), "pickled Python object"),  # noqa: E501
    Damage("checkpoint is a bare state_dict", "checkpoint", _torch_file({"w": torch.zeros(2)}), "not a tcc_ros checkpoint"),  # noqa: E501
    Damage("checkpoint from a newer version", "checkpoint", _checkpoint_edit(lambda c: c.update(version=99)), "version 99"),  # noqa: E501
    Damage("checkpoint without model config", "checkpoint", _checkpoint_edit(lambda c: c.update(config={})), "last.pt"),  # noqa: E501
    Damage("label JSON garbage", "dataset", _replace("train/ep1.json", b"\xc5\x00{"), "ep1"),
    Damage("label JSON wrong types", "dataset", _label("ep1", lambda lab: lab.update(num_frames="many", phase_ids="x")), "ep1"),  # noqa: E501
    Damage("labels disagree with frames", "dataset", _label("ep1", lambda lab: lab.update(num_frames=99)), "ep1"),  # noqa: E501
    Damage("frame PNG truncated", "dataset", _frame("ep1", 3, b"\x89PNG\r\n\x1a\n\0\0"), "ep1"),
    Damage("bag truncated", "bag", _bag_file(lambda p: p.write_bytes(p.read_bytes()[:4000])), "bag"),  # noqa: E501
    Damage("bag garbage", "bag", _bag_file(lambda p: p.write_bytes(os.urandom(4000))), "bag"),
    Damage("bag metadata missing", "bag", lambda b: (b / "metadata.yaml").unlink() or b, "bag"),
    Damage("TFRecord byte flipped", "tfrecord", _flip_byte, "x.tfrecord"),
    Damage("TFRecord truncated", "tfrecord", _truncate(""), "x.tfrecord"),
    Damage("TFRecord garbage", "tfrecord", _replace("", b"garbage!" * 8), "x.tfrecord"),
]
# fmt: on

GOOD_BAG, GOOD_DATA, GOOD_CKPT = "{good_bag}", "{good_dataset}", "{good_checkpoint}"
COMMANDS: dict[str, dict[str, list[str]]] = {
    "bundle": {
        "reference": [
            "tcc_model.reference",
            "--bundle",
            "{path}",
            "--dataset",
            f"folder:{GOOD_DATA}",
            "--no-register",
        ],  # noqa: E501
        "bench_engine": [
            "tcc_model.bench_engine",
            "--bundle",
            "{path}",
            "--backends",
            "onnxruntime",
            "--batches",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--gemm-size",
            "32",
            "--json",
            "{out}/b.json",
        ],  # noqa: E501
        "evaluate_bag": [
            "tcc_ros.evaluate_bag",
            GOOD_BAG,
            "--bundle",
            "{path}",
            "--out",
            "{out}/ev",
        ],
    },
    "bundle_torch": {
        "bench_engine": [
            "tcc_model.bench_engine",
            "--bundle",
            "{path}",
            "--backends",
            "torch",
            "--batches",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--gemm-size",
            "32",
            "--json",
            "{out}/b.json",
        ],  # noqa: E501
    },
    "references": {
        "evaluate_bag": [
            "tcc_ros.evaluate_bag",
            GOOD_BAG,
            "--bundle",
            "{path}",
            "--out",
            "{out}/ev",
        ],
    },
    "checkpoint": {
        "export": [
            "tcc_model.export",
            "--checkpoint",
            "{path}",
            "--out",
            "{out}/bundle",
            "--exporter",
            "torchscript",
        ],  # noqa: E501
        "evaluate": [
            "tcc_model.evaluate",
            "--checkpoint",
            "{path}",
            "--dataset",
            f"folder:{GOOD_DATA}",
            "--out",
            "{out}/eval",
            "--no-video",
            "--quiet",
        ],  # noqa: E501
    },
    "dataset": {
        "data.check": ["tcc_model.data.check", "{path}"],
        "evaluate": [
            "tcc_model.evaluate",
            "--checkpoint",
            GOOD_CKPT,
            "--dataset",
            "folder:{path}",
            "--out",
            "{out}/eval",
            "--no-video",
            "--quiet",
        ],  # noqa: E501
        "export": [
            "tcc_model.export",
            "--checkpoint",
            GOOD_CKPT,
            "--dataset",
            "folder:{path}",
            "--out",
            "{out}/bundle",
            "--exporter",
            "torchscript",
        ],  # noqa: E501
    },
    "bag": {
        "evaluate_bag": [
            "tcc_ros.evaluate_bag",
            "{path}",
            "--bundle",
            "{good_bundle}",
            "--out",
            "{out}/ev",
        ],  # noqa: E501
    },
    "tfrecord": {
        "tfrecord": [
            "tcc_model.data.tfrecord",
            "--input",
            "{path}",
            "--out",
            "{out}/ds",
            "--split",
            "train",
        ],  # noqa: E501
    },
}
#: Checkers report a bad artefact as a finding: non-zero exit, the file named, no traceback.
CHECKERS = {"data.check"}
CASES = [(d, command) for d in DAMAGES for command in COMMANDS[d.family]]
#: Cases whose command (owned elsewhere) still fails the rule; strict, so a fix is noticed.
KNOWN: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def results(good: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Damage a copy per case, run every command in one harness process, return the outcomes."""
    root = tmp_path_factory.mktemp("damaged")
    cases, keys = [], []
    for i, (damage, command) in enumerate(CASES):
        work = root / f"case{i:03d}"
        work.mkdir()
        source = good[damage.family]
        copy = work / source.name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, copy)
        path = damage.apply(copy)
        fields = {f"good_{k}": str(v) for k, v in good.items()}
        argv = [
            a.format(path=path, out=work, **fields) for a in COMMANDS[damage.family][command][1:]
        ]
        cases.append({"module": COMMANDS[damage.family][command][0], "argv": argv})
        keys.append((damage.name, command))
    spec = root / "cases.json"
    spec.write_text(json.dumps(cases))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TCC_DEBUG": ""}
    proc = subprocess.run(
        [sys.executable, str(HERE / "cli_harness.py"), str(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(zip(keys, json.loads(proc.stdout.strip().splitlines()[-1])))


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage,command",
    [
        pytest.param(
            d,
            c,
            id=f"{d.name} / {c}",
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN[(d.name, c)])]
            if (d.name, c) in KNOWN
            else [],
        )
        for d, c in CASES
    ],
)
def test_damaged_artefact_gives_one_error_line(results, damage: Damage, command: str) -> None:
    outcome = results[(damage.name, command)]
    err = outcome["stderr"]
    assert "Traceback" not in err, err[-3000:]
    assert not MARKER.exists(), "a pickled payload ran"
    if command in CHECKERS:
        assert outcome["rc"] != 0 and damage.needle in err + outcome.get("stdout", ""), err
        return
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert outcome["rc"] == 2, (outcome["rc"], err[-3000:])
    assert len(errors) == 1, err[-3000:]
    assert damage.needle in errors[0], errors[0]
