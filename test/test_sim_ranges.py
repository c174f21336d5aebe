"""Simulator sampling ranges: configuration, paired shifts, length without time distortion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tcc_model.errors import ConfigError
from tcc_model.sim.ranges import (
    SHIFT_FACTORS,
    SamplingRanges,
    shifted,
    widened,
)

pytest.importorskip("mujoco")

from tcc_model.data import sim_pouring  # noqa: E402
from tcc_model.data.registry import SIM_GENERATOR_VERSION  # noqa: E402
from tcc_model.sim import PouringEpisode, sample_scene  # noqa: E402
from tcc_model.sim.script import make_script  # noqa: E402

#: scene fields each factor may change (everything else must stay identical when shifted)
FACTOR_FIELDS = {
    "objects": {
        "bottle_radius",
        "bottle_height",
        "shoulder_height",
        "neck_radius",
        "neck_height",
        "bottle_waist",
        "cup_radius",
        "cup_height",
        "cup_flare",
    },
    "liquid": {"liquid_rgba"},
    "lighting": {"light_dir", "light_diffuse", "light_tint", "ambient"},
    "distractors": {"distractors"},
    "camera": {
        "cam_azimuth",
        "cam_elevation",
        "cam_distance",
        "cam_lookat",
        "cam_fovy",
        "cam_shake",
    },
    "motion": set(),
}


def _scene(seed: int, ranges: SamplingRanges | None) -> dict:
    return sample_scene(np.random.default_rng(seed), "station", ranges).to_dict()


@pytest.mark.parametrize("factor", SHIFT_FACTORS)
def test_a_shift_changes_only_its_factor(factor: str) -> None:
    ranges = shifted(factor, 1.0)
    for seed in range(5):
        control, moved = _scene(seed, None), _scene(seed, ranges)
        changed = {k for k in control if control[k] != moved[k]}
        assert changed <= FACTOR_FIELDS[factor], (factor, changed - FACTOR_FIELDS[factor])
        if factor != "motion":
            assert changed, f"{factor} shift left scene {seed} unchanged"


def test_shifted_values_lie_outside_the_default_ranges() -> None:
    default, moved = SamplingRanges(), shifted("all", 1.0)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, "station", moved)
        assert scene.bottle_radius >= default.objects.bottle_radius[1]
        assert scene.cup_height >= default.objects.cup_height[1]
        assert scene.light_diffuse <= default.lighting.light_diffuse[0]
        assert max(abs(v) for v in scene.light_dir[:2]) >= default.lighting.light_offset[1]
        assert len(scene.distractors) <= default.distractors.count[1] + 4
        assert tuple(scene.liquid_rgba) not in default.liquid.colours
        script = make_script(scene, rng, motion=moved.motion)
        assert script.params["speed_factor"] <= default.motion.speed[0]


def test_motion_shift_keeps_the_scene_and_changes_the_timing() -> None:
    control = PouringEpisode(np.random.default_rng(3), variation="station")
    faster = PouringEpisode(
        np.random.default_rng(3), variation="station", ranges=shifted("motion", 1.0)
    )
    assert control.scene.to_dict() == faster.scene.to_dict()
    assert faster.script.params["speed_factor"] < control.script.params["speed_factor"]
    assert control.script.params["grasp_height"] == faster.script.params["grasp_height"]


def test_size_zero_is_the_identity_and_widened_contains_the_defaults() -> None:
    assert shifted("all", 0.0).objects == SamplingRanges().objects
    wide, default = widened(1.0), SamplingRanges()
    for group in ("objects", "lighting", "motion"):
        for name, span in vars(getattr(default, group)).items():
            if isinstance(span, tuple):
                low, high = getattr(getattr(wide, group), name)
                assert low <= span[0] and high >= span[1], (group, name)
    assert set(default.liquid.colours) < set(wide.liquid.colours)


def test_ranges_round_trip_and_bad_keys_name_the_key() -> None:
    ranges = shifted("lighting", 0.5)
    assert SamplingRanges.from_dict(json.loads(json.dumps(ranges.to_dict()))) == ranges
    partial = SamplingRanges.from_dict({"motion": {"speed": [0.5, 0.6]}})
    assert partial.motion.speed == (0.5, 0.6) and partial.objects == SamplingRanges().objects
    with pytest.raises(ConfigError, match=r"ranges\.motion: unknown key 'sped'"):
        SamplingRanges.from_dict({"motion": {"sped": [0.5, 0.6]}})
    with pytest.raises(ConfigError, match=r"ranges\.motion\.speed: got .*low <= high"):
        SamplingRanges.from_dict({"motion": {"speed": [0.9, 0.6]}})
    with pytest.raises(ConfigError, match="unknown factor 'light'"):
        SamplingRanges.from_dict({"light": {}})
    with pytest.raises(ConfigError, match="unknown shift factor"):
        shifted("weather")


def test_length_is_real_time_unless_clamped() -> None:
    scene = sample_scene(np.random.default_rng(0), "station")
    free = make_script(scene, np.random.default_rng(1), fps=12.0)
    assert not free.params["clamped"]
    assert abs(free.params["time_scale"] - 1.0) <= 0.5 / free.num_frames + 1e-9
    assert free.num_frames == round(free.params["duration_s"] * 12.0)
    short = make_script(scene, np.random.default_rng(1), fps=12.0, max_frames=free.num_frames // 2)
    assert short.num_frames == free.num_frames // 2 and short.params["clamped"]
    assert short.params["time_scale"] == pytest.approx(2.0, rel=0.02)


def test_manifest_records_station_ranges_shift_and_clamping(tmp_path: Path) -> None:
    ranges, shift = sim_pouring.sampling_ranges(shift="liquid,camera", shift_size=0.5)
    out = sim_pouring.generate_dataset(
        tmp_path / "ds",
        2,
        size=32,
        seed=4,
        progress=False,
        variation="station",
        station=7,
        ranges=ranges,
        shift=shift,
        max_frames=40,
        split_fractions=(0.0, 0.0, 1.0),
    )
    generator = json.loads((out / "manifest.json").read_text())["generator"]
    assert generator["station"] == 7
    assert generator["version"] == SIM_GENERATOR_VERSION  # which simulator rendered the data
    assert generator["shift"] == {"factors": ["liquid", "camera"], "size": 0.5}
    assert SamplingRanges.from_dict(generator["ranges"]) == ranges
    assert generator["time_scaled_episodes"] == 2  # every episode is longer than 40 frames
    labels = json.loads(next((out / "test").glob("*.json")).read_text())
    assert labels["num_frames"] == 40 and labels["metadata"]["motion"]["time_scale"] > 1.5


def test_cli_rejects_an_unknown_shift_and_a_bad_ranges_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--shift 'sun'"):
        sim_pouring.main(["--out", str(tmp_path / "a"), "--episodes", "2", "--shift", "sun"])
    bad = tmp_path / "ranges.yaml"
    bad.write_text("motion:\n  speed: fast\n")
    with pytest.raises(ConfigError, match=r"ranges.yaml\.motion\.speed"):
        sim_pouring.main(["--out", str(tmp_path / "b"), "--episodes", "2", "--ranges", str(bad)])


def test_ranges_file_that_is_not_yaml_is_one_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ranges.yaml"
    bad.write_text("motion: [unclosed\n")
    with pytest.raises(ConfigError, match=r"ranges.yaml: .*pass a JSON or YAML mapping"):
        sim_pouring.sampling_ranges(bad)
    with pytest.raises(ConfigError, match="missing.yaml"):
        sim_pouring.sampling_ranges(tmp_path / "missing.yaml")
