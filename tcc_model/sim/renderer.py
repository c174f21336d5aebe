"""Offscreen MuJoCo rendering that keeps one OpenGL context per process.

Creating the first ``MjrContext`` in a fresh OpenGL context costs about a second on llvmpipe
(shader compilation); later ones in the same context take tens of milliseconds. The dataset
generator builds a new model per episode, so :class:`OffscreenRenderer` keeps its GL context and
only swaps the model-specific ``MjrContext`` and ``MjvScene``.
"""

from __future__ import annotations

import atexit

import mujoco
import numpy as np

_MAX_GEOMS = 1000
_shared: dict[int, OffscreenRenderer] = {}


class OffscreenRenderer:
    """Renders ``size`` x ``size`` RGB images of any model bound with :meth:`bind`."""

    def __init__(self, size: int) -> None:
        from mujoco import gl_context

        if gl_context.GLContext is None:
            raise RuntimeError(
                "MuJoCo has no offscreen OpenGL backend: set MUJOCO_GL=egl (or osmesa) before "
                "mujoco is first imported"
            )
        self.size = int(size)
        self._gl = gl_context.GLContext(self.size, self.size)
        self._gl.make_current()
        self._model: mujoco.MjModel | None = None
        self._context: mujoco.MjrContext | None = None
        self._scene: mujoco.MjvScene | None = None
        self._rect = mujoco.MjrRect(0, 0, self.size, self.size)

    def bind(self, model: mujoco.MjModel) -> None:
        """Upload ``model``'s meshes and textures; later :meth:`render` calls draw this model."""
        if model is self._model:
            return
        for name, limit in (
            ("offwidth", model.vis.global_.offwidth),
            ("offheight", model.vis.global_.offheight),
        ):
            if limit < self.size:
                raise ValueError(f"model framebuffer {name}={limit} is smaller than {self.size}")
        self._gl.make_current()
        self._free_model()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._context)
        self._scene = mujoco.MjvScene(model, maxgeom=_MAX_GEOMS)
        self._model = model

    def render(
        self,
        data: mujoco.MjData,
        camera: mujoco.MjvCamera,
        option: mujoco.MjvOption,
        shadows: bool = True,
    ) -> np.ndarray:
        """RGB uint8 ``[size, size, 3]`` image of ``data`` (bound model) seen by ``camera``."""
        if self._model is None or self._scene is None:
            raise RuntimeError("bind a model before rendering")
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self._model, data, option, None, camera, mujoco.mjtCatBit.mjCAT_ALL.value, self._scene
        )
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(shadows)
        mujoco.mjr_render(self._rect, self._scene, self._context)
        image = np.empty((self.size, self.size, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(image, None, self._rect, self._context)
        return np.ascontiguousarray(image[::-1])  # OpenGL rows run bottom-up

    def _free_model(self) -> None:
        if self._context is not None:
            self._context.free()
        self._context = self._scene = self._model = None

    def close(self) -> None:
        """Free the model resources and the GL context."""
        if self._gl is None:
            return
        self._gl.make_current()
        self._free_model()
        self._gl.free()
        self._gl = None


def shared_renderer(size: int) -> OffscreenRenderer:
    """The process-wide renderer for ``size`` (created on first use, closed at exit)."""
    renderer = _shared.get(size)
    if renderer is None:
        renderer = _shared[size] = OffscreenRenderer(size)
        # registered after the GL backend's own exit handler, so it runs first (LIFO)
        atexit.register(_close_shared)
    return renderer


def _close_shared() -> None:
    while _shared:
        _shared.popitem()[1].close()
