"""Small geometry helpers for the pouring simulator: rotations, quaternions, meshes, easing."""

from __future__ import annotations

import numpy as np

_UNIT_Z = np.array([0.0, 0.0, 1.0])


def rot_y(angle: float) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` about the world y axis by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def quat_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` of a rotation matrix ``[3, 3]``."""
    r = np.asarray(rotation, dtype=np.float64)
    w = np.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = np.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2
    y = np.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2
    z = np.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2
    x = np.copysign(x, r[2, 1] - r[1, 2])
    y = np.copysign(y, r[0, 2] - r[2, 0])
    z = np.copysign(z, r[1, 0] - r[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def matrix_from_quat(quat: np.ndarray) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` of a quaternion ``(w, x, y, z)``."""
    w, x, y, z = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def quats_z_to(directions: np.ndarray) -> np.ndarray:
    """Quaternions ``[N, 4]`` rotating +z onto each direction of ``directions`` ``[N, 3]``.

    Zero-length directions give the identity; directions opposite to +z a half turn about x.
    """
    v = np.atleast_2d(np.asarray(directions, dtype=np.float64))
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    unit = v / np.maximum(norm, 1e-12)
    cos = unit @ _UNIT_Z
    quats = np.concatenate([1.0 + cos[:, None], np.cross(_UNIT_Z, unit)], axis=1)
    quats[cos < -0.999999] = [0.0, 1.0, 0.0, 0.0]
    quats[norm[:, 0] < 1e-9] = [1.0, 0.0, 0.0, 0.0]
    return quats / np.linalg.norm(quats, axis=1, keepdims=True)


def min_jerk(t: np.ndarray | float) -> np.ndarray:
    """Minimum-jerk easing ``10t^3 - 15t^4 + 6t^5`` of ``t`` clipped to [0, 1]."""
    t = np.clip(t, 0.0, 1.0)
    return t**3 * (10 - 15 * t + 6 * t**2)


def lathe_mesh(profile: np.ndarray, segments: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Surface of revolution about z of a ``profile`` ``[P, 2]`` of (radius, z) points.

    Returns ``vertices [P * segments, 3]`` and triangle ``faces [F, 3]``. Rings of radius 0 collapse
    to the axis; their degenerate triangles are dropped.
    """
    profile = np.asarray(profile, dtype=np.float64)
    angles = 2 * np.pi * np.arange(segments) / segments
    radius, height = profile[:, :1], profile[:, 1:]
    heights = np.broadcast_to(height, (len(profile), segments))
    vertices = np.stack([radius * np.cos(angles), radius * np.sin(angles), heights], axis=-1)
    vertices = vertices.reshape(-1, 3)
    ring = np.arange(len(profile))[:, None] * segments
    j = np.arange(segments)[None, :]
    a, b = ring[:-1] + j, ring[:-1] + (j + 1) % segments
    c, d = ring[1:] + (j + 1) % segments, ring[1:] + j
    faces = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)], axis=0).reshape(
        -1, 3
    )
    # triangles with two corners on a ring of radius 0 are degenerate (zero area): drop them
    on_axis = profile[:, 0] < 1e-6
    keep = np.concatenate([np.repeat(~on_axis[:-1], segments), np.repeat(~on_axis[1:], segments)])
    return vertices, faces[keep]
