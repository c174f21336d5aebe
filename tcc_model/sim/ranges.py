"""The simulator's per-episode sampling ranges as a typed configuration, and shifts beyond them.

:class:`SamplingRanges` holds every range :func:`tcc_model.sim.scene.sample_scene` and
:func:`tcc_model.sim.script.make_script` draw from, grouped by the factors a robot cell sees
change: the objects (bottle and cup shapes and sizes), the liquid colours, the lighting, the
distractors on the table, the motion (speed and pauses) and the camera (jitter of the station
camera and shake). A range is a ``(low, high)`` pair drawn uniformly; a *mirrored* range is a
magnitude drawn with a random sign (one draw in ``[-1, 1)``), so ``(0.6, 1.1)`` means
``[-1.1, -0.6] ∪ [0.6, 1.1]``.

Pairing: every range is drawn with the same number of random numbers whatever its bounds, and the
draws whose count depends on a range (distractors) come from their own random stream. Episode
``i`` rendered with shifted ranges is therefore episode ``i`` of the control with only the
shifted factor changed. :func:`shifted` moves the ranges of one or more factors *outside* the
default ones by a shift size (1.0: by about one range width); :func:`widened` extends them on
both sides (domain randomisation for training).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from tcc_model.errors import ConfigError, safe_text

Span = tuple[float, float]
RGBA = tuple[float, float, float, float]

#: liquid colours (RGBA): water, orange juice, cola, milk, red wine, green tea
LIQUID_COLOURS: tuple[RGBA, ...] = (
    (0.25, 0.45, 0.85, 0.75),
    (0.95, 0.55, 0.10, 0.90),
    (0.35, 0.18, 0.08, 0.95),
    (0.95, 0.95, 0.92, 0.95),
    (0.70, 0.10, 0.15, 0.85),
    (0.55, 0.80, 0.30, 0.80),
)
#: liquids never seen in the default ranges: grape juice, lemonade, pink lemonade, clear soda,
#: dark green smoothie, blue sports drink (one per default colour, same order)
NOVEL_LIQUID_COLOURS: tuple[RGBA, ...] = (
    (0.40, 0.12, 0.50, 0.92),
    (0.98, 0.92, 0.35, 0.80),
    (0.98, 0.50, 0.70, 0.85),
    (0.80, 0.85, 0.88, 0.45),
    (0.12, 0.35, 0.12, 0.95),
    (0.10, 0.80, 0.95, 0.80),
)


def draw(rng: np.random.Generator, span: Span) -> float:
    """One uniform draw in ``span`` (one random number, whatever the bounds)."""
    return float(rng.uniform(span[0], span[1]))


def draw_mirrored(rng: np.random.Generator, span: Span, size: int | None = None) -> Any:
    """Magnitude in ``span`` with a random sign, from one draw in ``[-1, 1)`` per value."""
    u = rng.uniform(-1.0, 1.0, size)
    value = np.sign(u) * (span[0] + np.abs(u) * (span[1] - span[0]))
    return float(value) if size is None else value


@dataclass(frozen=True)
class ObjectRanges:
    """Bottle and cup shapes and sizes (metres; waist and flare are ratios)."""

    bottle_radius: Span = (0.026, 0.04)
    bottle_height: Span = (0.13, 0.2)  # cylindrical body
    shoulder_height: Span = (0.015, 0.04)
    neck_radius: Span = (0.010, 0.016)
    neck_height: Span = (0.03, 0.06)
    bottle_waist: Span = (0.85, 1.0)  # relative radius at mid height
    cup_radius: Span = (0.035, 0.055)
    cup_height: Span = (0.055, 0.10)
    cup_flare: Span = (1.0, 1.25)  # rim radius / base radius


@dataclass(frozen=True)
class LiquidRanges:
    """The liquid of an episode is one of ``colours`` (RGBA), chosen uniformly."""

    colours: tuple[RGBA, ...] = LIQUID_COLOURS


@dataclass(frozen=True)
class LightingRanges:
    """The directional key light and the ambient (head) light."""

    light_offset: Span = (0.0, 0.6)  # mirrored: x and y of the light direction (z = -1)
    light_diffuse: Span = (0.35, 0.9)
    light_tint: Span = (0.8, 1.0)  # per RGB channel
    ambient: Span = (0.1, 0.45)


@dataclass(frozen=True)
class DistractorRanges:
    """Primitive objects on the table the robot ignores."""

    count: tuple[int, int] = (0, 4)  # inclusive
    size: Span = (0.015, 0.05)  # half sizes (m)
    clearance: float = 0.12  # minimum distance to the bottle and the cup (m)


@dataclass(frozen=True)
class MotionRanges:
    """Speed of the scripted motion: segment duration = base x speed x segment_speed."""

    speed: Span = (0.75, 1.3)  # per episode; below 1 is faster
    segment_speed: Span = (0.7, 1.4)  # per segment
    pause_probability: float = 0.15  # after each segment but the pour
    pause_seconds: Span = (0.2, 0.6)


@dataclass(frozen=True)
class CameraRanges:
    """Station camera: nominal pose plus a mirrored jitter times per-axis amplitudes; shake."""

    jitter: Span = (0.0, 1.0)  # mirrored, in units of the amplitudes below
    azimuth_deg: float = 4.0
    elevation_deg: float = 3.0
    distance: float = 0.03
    lookat: float = 0.01
    fovy_deg: float = 2.0
    shake: Span = (0.0, 0.003)  # per-frame standard deviation (m; x20 in degrees of azimuth)


@dataclass(frozen=True)
class SamplingRanges:
    """Every per-episode range of the simulator, grouped by factor (defaults: the training data)."""

    objects: ObjectRanges = field(default_factory=ObjectRanges)
    liquid: LiquidRanges = field(default_factory=LiquidRanges)
    lighting: LightingRanges = field(default_factory=LightingRanges)
    distractors: DistractorRanges = field(default_factory=DistractorRanges)
    motion: MotionRanges = field(default_factory=MotionRanges)
    camera: CameraRanges = field(default_factory=CameraRanges)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (tuples as lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "ranges") -> SamplingRanges:
        """Ranges from a (partial) nested dict; unknown keys and bad values raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping of factor -> ranges")
        groups = {f.name: f for f in fields(cls)}
        values = {}
        for name, group in data.items():
            if name not in groups:
                raise ConfigError(
                    f"{source}: unknown factor {safe_text(name)!r}; expected one of "
                    f"{', '.join(groups)}"
                )
            default = getattr(cls(), name)
            values[name] = _group_from_dict(default, group, f"{source}.{name}")
        return cls(**values)


def _group_from_dict(default: Any, data: Any, source: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of range name -> value")
    known = {f.name for f in fields(default)}
    changes = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key {safe_text(key)!r}; expected one of {', '.join(known)}"
            )
        changes[key] = _check_value(getattr(default, key), value, f"{source}.{key}")
    return replace(default, **changes)


def _check_value(default: Any, value: Any, source: str) -> Any:
    """``value`` in the shape of ``default`` (a number, a (low, high) pair or a colour list)."""
    try:
        if isinstance(default, tuple) and default and isinstance(default[0], tuple):
            colours = tuple(tuple(float(c) for c in rgba) for rgba in value)
            if not colours or any(len(c) != 4 or min(c) < 0 or max(c) > 1 for c in colours):
                raise ValueError
            return colours
        if isinstance(default, tuple):
            kind = type(default[0])
            low, high = (kind(v) for v in value)
            if not low <= high:
                raise ValueError
            return (low, high)
        return type(default)(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: got {safe_text(value)!r}; expected "
            + (
                "a list of [r, g, b, a] colours in 0..1"
                if isinstance(default, tuple) and isinstance(default[0], tuple)
                else "[low, high] with low <= high"
                if isinstance(default, tuple)
                else "a number"
            )
        ) from None


# --------------------------------------------------------------------------------------------
# Shifts

#: the factors :func:`shifted` can move, in table order
SHIFT_FACTORS: tuple[str, ...] = (
    "objects",
    "lighting",
    "motion",
    "distractors",
    "liquid",
    "camera",
)


def _lerp(start: Span, target: Span, size: float) -> Span:
    """Both ends moved linearly from ``start`` (size 0) to ``target`` (size 1) and beyond."""
    return (
        start[0] + size * (target[0] - start[0]),
        start[1] + size * (target[1] - start[1]),
    )


def _above(span: Span, size: float, scale: float = 1.0) -> Span:
    """At size 1: ``scale`` widths just above ``span``; size 0: ``span`` itself."""
    width = (span[1] - span[0]) * scale
    return _lerp(span, (span[1], span[1] + width), size)


def _below(span: Span, size: float, scale: float = 1.0, floor: float = 0.0) -> Span:
    """At size 1: ``scale`` widths just below ``span`` (not under ``floor``); size 0: ``span``."""
    width = (span[1] - span[0]) * scale
    low, high = _lerp(span, (span[0] - width, span[0]), size)
    return (max(low, floor), max(high, floor))


def _shift_group(ranges: SamplingRanges, factor: str, s: float) -> Any:
    """The ranges of ``factor`` moved outside their defaults by shift size ``s``."""
    o, li, lq = ranges.objects, ranges.lighting, ranges.liquid
    d, m, c = ranges.distractors, ranges.motion, ranges.camera
    if factor == "objects":  # wider, squatter bottles with longer necks; bigger flared cups
        return replace(
            o,
            bottle_radius=_above(o.bottle_radius, s, 0.8),
            bottle_height=_below(o.bottle_height, s, 0.5),
            shoulder_height=_above(o.shoulder_height, s, 0.6),
            neck_radius=_above(o.neck_radius, s, 0.6),
            neck_height=_above(o.neck_height, s, 0.5),
            bottle_waist=_below(o.bottle_waist, s, 1.0),
            cup_radius=_above(o.cup_radius, s, 0.6),
            cup_height=_above(o.cup_height, s, 0.5),
            cup_flare=_above(o.cup_flare, s, 0.8),
        )
    if factor == "liquid":  # each colour blended towards a colour never seen
        k = min(max(s, 0.0), 1.0)
        novel = NOVEL_LIQUID_COLOURS * (len(lq.colours) // len(NOVEL_LIQUID_COLOURS) + 1)
        return replace(
            lq,
            colours=tuple(
                tuple(float((1 - k) * a + k * b) for a, b in zip(old, new))
                for old, new in zip(lq.colours, novel)
            ),
        )
    if factor == "lighting":  # low sun, dimmer light, stronger colour cast
        return replace(
            li,
            light_offset=_above(li.light_offset, s, 0.8),
            light_diffuse=_below(li.light_diffuse, s, 0.4, floor=0.05),
            light_tint=_below(li.light_tint, s, 1.5, floor=0.2),
            ambient=_below(li.ambient, s, 0.2, floor=0.02),
        )
    if factor == "distractors":  # more, bigger objects, closer to the bottle and cup
        count = _lerp(d.count, (d.count[1] + 1, d.count[1] + 4), s)
        return replace(
            d,
            count=(int(round(count[0])), int(round(count[1]))),
            size=_above(d.size, s, 0.6),
            clearance=max(d.clearance - 0.02 * s, 0.08),
        )
    if factor == "motion":  # a faster robot that pauses more often, for longer
        return replace(
            m,
            speed=_below(m.speed, s, 0.5, floor=0.2),
            pause_probability=min(m.pause_probability + 0.25 * s, 0.9),
            pause_seconds=_above(m.pause_seconds, s, 1.5),
        )
    if factor == "camera":  # the station camera knocked beyond its usual jitter, more shake
        return replace(c, jitter=_above(c.jitter, s, 1.0), shake=_above(c.shake, s, 1.0))
    raise ConfigError(
        f"unknown shift factor {safe_text(factor)!r}; expected one of {SHIFT_FACTORS}"
    )


def shifted(
    factors: str | Iterable[str], size: float = 1.0, ranges: SamplingRanges | None = None
) -> SamplingRanges:
    """``ranges`` (default: the defaults) with each of ``factors`` moved outside by ``size``.

    ``factors`` is a factor name, ``"all"``, or several names. Every bound moves linearly with
    ``size``: 0 leaves the ranges as they are, 1 puts them just outside the defaults (about one
    default width beyond; see :func:`_shift_group`), 0.5 half way (overlapping the defaults).
    """
    ranges = ranges or SamplingRanges()
    names = [factors] if isinstance(factors, str) else list(factors)
    if names == ["all"]:
        names = list(SHIFT_FACTORS)
    if not size >= 0:
        raise ConfigError(f"shift size must be >= 0, got {size}")
    changes = {name: _shift_group(ranges, name, float(size)) for name in names}
    return replace(ranges, **changes)


def _wide(span: Span, size: float, floor: float = 0.0) -> Span:
    width = span[1] - span[0]
    return (max(span[0] - size * width / 2, floor), span[1] + size * width / 2)


def widened(size: float = 1.0, ranges: SamplingRanges | None = None) -> SamplingRanges:
    """Domain randomisation for training: every range extended by ``size`` x its width / 2 on
    both sides, the liquid palette doubled with the novel colours at half strength."""
    r = ranges or SamplingRanges()
    o, li, d, m, c = r.objects, r.lighting, r.distractors, r.motion, r.camera
    half = shifted("liquid", 0.5, r).liquid.colours
    return SamplingRanges(
        objects=ObjectRanges(
            **{f.name: _wide(getattr(o, f.name), size * 0.6, 0.005) for f in fields(o)}
        ),
        liquid=LiquidRanges(colours=r.liquid.colours + half),
        lighting=LightingRanges(
            light_offset=_wide(li.light_offset, size * 0.6),
            light_diffuse=_wide(li.light_diffuse, size * 0.3, 0.1),
            light_tint=_wide(li.light_tint, size, 0.4)[:1] + (1.0,),
            ambient=_wide(li.ambient, size * 0.2, 0.04),
        ),
        distractors=replace(d, count=(d.count[0], d.count[1] + max(int(round(2 * size)), 0))),
        motion=replace(
            m,
            speed=_wide(m.speed, size * 0.5, 0.3),
            pause_probability=min(m.pause_probability + 0.1 * size, 0.9),
            pause_seconds=_wide(m.pause_seconds, size, 0.1),
        ),
        camera=replace(c, jitter=(0.0, c.jitter[1] * (1 + 0.5 * size)), shake=_wide(c.shake, size)),
    )
