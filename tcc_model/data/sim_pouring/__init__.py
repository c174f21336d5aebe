"""Generate the synthetic robot-pouring dataset with the MuJoCo simulator (:mod:`tcc_model.sim`).

CLI::

    python -m tcc_model.data.sim_pouring --out DIR --episodes N [--size 112] [--anomaly-rate R]
        [--seed S] [--workers W] [--fps 12] [--split-fractions 0.7,0.15,0.15]
        [--variation full|station] [--station SEED] [--ranges FILE] [--widen SIZE]
        [--shift FACTOR[,FACTOR...]|all] [--shift-size 1.0] [--min-frames N] [--max-frames N]

writes the dataset format of ``docs/ARCHITECTURE.md``: ``train/ val/ test/`` with one mp4 and one
label JSON per episode, and ``manifest.json``.

Determinism: the split of every episode, whether it is anomalous (and how), and its simulation seed
are all derived from ``--seed`` alone, so the same arguments give byte-identical files whatever
``--workers`` is.

Splits and anomalies: episodes are shuffled into the splits by ``--split-fractions`` (largest
remainder rounding). Within every split, ``round(rate * n_split)`` episodes are anomalous, the four
anomaly types in equal shares; in ``train`` at least one episode stays normal
(unless the rate is 1).
Training code keeps the normal ones (``labels.anomaly is None``). Every normal episode passes every
key event in order, with no spilled liquid. Every anomalous episode has a non-empty
``anomaly_mask``. An episode that fails these checks is simulated again from a derived seed
(``metadata.attempt``).

Sampling ranges (:mod:`tcc_model.sim.ranges`): ``--ranges FILE`` (JSON or YAML, a partial
nested mapping factor -> range -> value) replaces defaults, ``--widen S`` extends every range
(domain randomisation), ``--shift F --shift-size S`` moves factor ``F`` outside its range. The
ranges used, the station and the shift are recorded in the manifest. A shifted dataset with the
same ``--seed`` and ``--episodes`` is *paired* with the unshifted one: episode ``i`` is the same
scene and motion with only the shifted factor changed (unless one of them needed a re-simulation,
``metadata.attempt``).

Episode length: ``round(duration x fps)`` frames, so the video shows the simulated speed.
``--min-frames`` / ``--max-frames`` clamp it by stretching or compressing time instead; every
episode records ``metadata.motion.time_scale`` and the manifest counts the clamped ones.

Atomicity: everything is written to ``DIR.tmp-XXXX`` next to ``DIR``, and that folder is renamed to
``DIR`` only once the manifest is written. A failed or interrupted run removes it.

Modules: :mod:`~.plan` (split, anomaly and seed of every episode), :mod:`~.episode` (simulate,
check, render and label one episode), :mod:`~.dataset` (rendering processes, staging folder,
manifest), :mod:`~.cli` (arguments, sampling ranges, the command). Nothing here imports MuJoCo
before an episode is simulated.
"""

from tcc_model.data.sim_pouring.cli import build_parser, main, sampling_ranges
from tcc_model.data.sim_pouring.dataset import MAX_POOL_RESTARTS, generate_dataset
from tcc_model.data.sim_pouring.episode import (
    MAX_ATTEMPTS,
    STATION_SEED,
    RenderSettings,
    episode_labels,
    render_episode,
    simulate_episode,
)
from tcc_model.data.sim_pouring.plan import (
    DATASET_NAME,
    DEFAULT_SPLIT_FRACTIONS,
    EpisodePlan,
    episode_seed,
    plan_dataset,
    split_counts,
)

__all__ = [
    "DATASET_NAME",
    "DEFAULT_SPLIT_FRACTIONS",
    "MAX_ATTEMPTS",
    "MAX_POOL_RESTARTS",
    "STATION_SEED",
    "EpisodePlan",
    "RenderSettings",
    "build_parser",
    "episode_labels",
    "episode_seed",
    "generate_dataset",
    "main",
    "plan_dataset",
    "render_episode",
    "sampling_ranges",
    "simulate_episode",
    "split_counts",
]
