"""Typed configuration: the generic loader (tcc_model.config) and the training config layers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from tcc_model import config as tc
from tcc_model.errors import ConfigError
from tcc_model.train import config as train_config
from tcc_model.train.cli import main


@dataclass
class Inner:
    """A nested section."""

    size: int = 3
    names: tuple[str, ...] = ("a",)


@dataclass
class Example:
    """One field of every supported kind."""

    flag: bool = False
    count: int = 1
    rate: float = 0.5
    mode: Literal["fast", "slow"] = "fast"
    level: Literal[1, 2, 3] = 1
    path: str | None = None
    limit: int | None = None
    rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    items: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("flag", "yes", True),
        ("flag", "False", False),
        ("flag", "0", False),
        ("count", "12", 12),
        ("count", "1e3", 1000),
        ("rate", "3e-4", 3e-4),
        ("rate", "2", 2.0),
        ("mode", "slow", "slow"),
        ("level", "2", 2),
        ("path", "null", None),
        ("path", "a/b", "a/b"),
        ("limit", "none", None),
        ("limit", "7", 7),
        ("rgb", "0.1,0.2,0.3", (0.1, 0.2, 0.3)),
        ("rgb", "[1, 2, 3]", (1.0, 2.0, 3.0)),
        ("items", "[4, 5]", [4, 5]),
        ("extra", "{a: 1}", {"a": 1}),
        ("inner.size", "9", 9),
        ("inner.names", "x,y", ("x", "y")),
    ],
)
def test_text_is_coerced_to_the_field_type(key, text, value):
    data = tc.apply_overrides(Example, {}, [f"{key}={text}"])
    built = tc.from_mapping(Example, data)
    got = built
    for part in key.split("."):
        got = getattr(got, part)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("flag=maybe", "flag=maybe: expected true or false"),
        ("count=5.5", "count=5.5: expected an integer"),
        ("count=true", "count=true: expected an integer"),
        ("rate=fast", "rate=fast: expected a number"),
        ("rate=nan", "rate=nan: expected a number"),
        ("mode=medium", "mode=medium: expected one of 'fast', 'slow'"),
        ("level=4", "level=4: expected one of 1, 2, 3"),
        ("limit=many", "limit=many: expected an integer or null"),
        ("rgb=1,2", "rgb=1,2: expected a list of 3 values"),
        ("inner.size=big", "inner.size=big: expected an integer"),
        ("inner.nope=1", "unknown key nope; valid keys: size, names"),
        ("colour=red", "unknown key colour"),
        ("flag", "expected section.key=value"),
        ("flag.x=1", "flag has no sub-keys"),
    ],
)
def test_every_class_of_mistake_names_key_value_and_type(item, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        tc.from_mapping(Example, tc.apply_overrides(Example, {}, [item]))


def test_mappings_are_checked_like_text():
    with pytest.raises(ConfigError, match=r"cfg.yaml: count=True: expected an integer"):
        tc.merge(Example, {}, {"count": True}, "cfg.yaml")
    with pytest.raises(ConfigError, match=r"x: inner.size=2.5: expected an integer"):
        tc.merge(Example, {}, {"inner": {"size": 2.5}}, "x")
    # YAML reads 1e-4 as a string: it still is a number for a float field.
    assert tc.merge(Example, {}, {"rate": "1e-4"}, "x")["rate"] == pytest.approx(1e-4)
    built = tc.from_mapping(Example, {"rgb": [1, 2, 3], "inner": {"names": ["q"]}})
    assert built.rgb == (1.0, 2.0, 3.0) and built.inner.names == ("q",)
    assert tc.to_dict(built)["rgb"] == [1.0, 2.0, 3.0]


# --- the training CLI: each mistake fails before any data is read ----------------------------

MISSING = "folder:/nonexistent/dataset"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("train.amp=maybe", "train.amp=maybe: expected true or false"),
        ("train.steps=5.5", "train.steps=5.5: expected an integer"),
        ("train.lr=fast", "train.lr=fast: expected a number"),
        ("algo.temperature=hot", "algo.temperature=hot: expected a number"),
        ("algo.temperature=-1", "algo.temperature=-1.0: expected > 0"),
        ("model.encoder=resnet18", "model.encoder=resnet18: expected one of"),
        ("train.lrr=1", "unknown key lrr"),
        ("data.augment=maybe", "data.augment=maybe: expected true or false or one of 'none'"),
        ("train.val_max_videos=1", "train.val_max_videos=1: expected 0 (all) or >= 2"),
    ],
)
def test_training_cli_rejects_bad_values_before_loading_data(item, expected, tmp_path, capsys):
    assert main(["--dataset", MISSING, "--out", str(tmp_path / "r"), "--set", item]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "r").exists()


def test_bad_value_in_a_config_file_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 5.5\n")
    assert main(["--dataset", MISSING, "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}: train.steps=5.5: expected an integer" in err


def test_device_is_validated_before_loading_data(tmp_path, capsys):
    import torch

    args = ["--dataset", MISSING, "--out", str(tmp_path / "r")]
    assert main([*args, "--device", "tpu"]) == 2
    assert "expected cpu, cuda or cuda:N" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_configs_are_found_by_name_and_in_a_ros_share(tmp_path, monkeypatch):
    assert train_config.find_config("sim_pouring") == train_config.SOURCE_CONFIG_DIR / (
        "sim_pouring.yaml"
    )
    # A colcon install: no source tree, the configs in share/tcc_ros/config/train.
    share = tmp_path / "share" / "tcc_ros"
    (share / "config" / "train").mkdir(parents=True)
    (share / "config" / "train" / "sim_pouring.yaml").write_text("train:\n  steps: 7\n")
    monkeypatch.setattr(train_config, "SOURCE_CONFIG_DIR", tmp_path / "absent")
    ament = pytest.importorskip("ament_index_python.packages")
    monkeypatch.setattr(ament, "get_package_share_directory", lambda name: str(share))
    assert train_config.default_config_path("folder:x") is None
    config = train_config.layer_config("sim_pouring")
    assert config.train.steps == 7
    with pytest.raises(ConfigError, match="known configs: \\['sim_pouring'\\]"):
        train_config.find_config("nope")


def test_every_shipped_config_loads():
    for path in sorted(Path(train_config.SOURCE_CONFIG_DIR).glob("*.yaml")):
        config = train_config.layer_config("folder:x", path)
        assert config.train.steps > 0, path


def test_camera_augmentation_reaches_the_training_clips():
    from tcc_model.data.augment import AugmentConfig, resolve_augment
    from tcc_model.train.config import DataConfig

    data = tc.from_mapping(DataConfig, tc.apply_overrides(DataConfig, {}, ["augment=camera"]))
    assert isinstance(resolve_augment(data.augment), AugmentConfig)
    assert resolve_augment(DataConfig().augment) == "reference"  # the default is unchanged
