"""Charged-particle N-body data set (the EGNN / PΘNITA "nbody_small" task).

Follows the simulator of Kipf et al. (NRI, 2018) as modified by Fuchs et al.
(SE(3)-Transformer) and Satorras et al. (EGNN, 2021): 5 particles with charges
±1 (p = 1/2 each), initial positions ~ N(0, 1), initial speeds 0.5 in a random
direction, Coulomb forces ``F_i = Σ_j q_i q_j (x_i − x_j)/|x_i − x_j|³`` with
each component clipped to ±100, time step 0.001, 5000 steps integrated with
semi-implicit Euler (velocity kick, then drift), state sampled every 100 steps
(49 frames, frame ``k`` at step ``100 (k + 1)``). The task: given positions
and velocities at frame 30 and the charges, predict positions at frame 40.

Departure: simulations are vectorised over the batch and each one is seeded
with ``(split seed, index)``, so a smaller set is a prefix of a larger one with
the same seed; the files are not the EGNN ones bit for bit.

Files are cached as ``.npz`` under ``$GEO_CACHE/nbody`` (default
``~/.cache/geo/nbody``, honouring ``XDG_CACHE_HOME``) or a ``root`` you pass.

Command line::

    python -m geo.equivariant.nbody            # small default set (500/200/200)
    python -m geo.equivariant.nbody --full     # the 3000/2000/2000 split
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

__all__ = ["simulate_charged", "cache_dir", "load_split", "nbody_task", "SPLIT_SEEDS", "FULL_SIZES", "SMALL_SIZES"]

SPLIT_SEEDS = {"train": 42, "val": 43, "test": 44}
FULL_SIZES = {"train": 3000, "val": 2000, "test": 2000}
SMALL_SIZES = {"train": 500, "val": 200, "test": 200}
FRAME_IN, FRAME_OUT = 30, 40


def simulate_charged(
    num_sims: int,
    seed: int,
    n_balls: int = 5,
    steps: int = 5000,
    sample_every: int = 100,
    dt: float = 1e-3,
    max_force: float = 100.0,
    vel_norm: float = 0.5,
    loc_std: float = 1.0,
    start: int = 0,
):
    """Simulate ``num_sims`` charged systems (vectorised), simulation ``i`` seeded by ``(seed, start + i)``.

    Returns:
        ``loc [S, T, n_balls, 3]``, ``vel [S, T, n_balls, 3]`` (float64, ``T =
        steps // sample_every - 1``) and ``charges [S, n_balls]`` (±1).
    """
    loc = np.empty((num_sims, n_balls, 3))
    vel = np.empty((num_sims, n_balls, 3))
    charges = np.empty((num_sims, n_balls))
    for i in range(num_sims):
        rng = np.random.default_rng([seed, start + i])
        charges[i] = rng.choice([-1.0, 1.0], size=n_balls)
        loc[i] = rng.standard_normal((n_balls, 3)) * loc_std
        v = rng.standard_normal((n_balls, 3))
        vel[i] = v * vel_norm / np.linalg.norm(v, axis=-1, keepdims=True)
    qq = charges[:, :, None] * charges[:, None, :]
    eye = np.eye(n_balls, dtype=bool)

    def force(x):
        d = x[:, :, None, :] - x[:, None, :, :]  # x_i - x_j
        r2 = (d**2).sum(-1)
        r2[:, eye] = np.inf
        f = ((qq / r2**1.5)[..., None] * d).sum(2)
        return np.clip(f, -max_force, max_force)

    n_frames = steps // sample_every - 1
    locs = np.empty((num_sims, n_frames, n_balls, 3))
    vels = np.empty_like(locs)
    vel = vel + dt * force(loc)
    frame = 0
    for step in range(1, steps):
        loc = loc + dt * vel
        if step % sample_every == 0:
            locs[:, frame], vels[:, frame] = loc, vel
            frame += 1
        vel = vel + dt * force(loc)
    return locs, vels, charges


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the data set files live (created on demand)."""
    if root is None:
        base = os.environ.get("GEO_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "geo"
        )
        root = os.path.join(base, "nbody")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


def load_split(split: str, num: int | None = None, root=None, verbose: bool = False) -> dict:
    """Load (simulating and caching on first use) ``num`` simulations of ``split``.

    Any cached file with at least ``num`` simulations of that split is reused
    (a prefix of it is returned).

    Returns:
        dict of float64 arrays ``loc, vel [S, T, 5, 3]``, ``charges [S, 5]``.
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {list(SPLIT_SEEDS)}, got {split!r}")
    num = SMALL_SIZES[split] if num is None else int(num)
    d = cache_dir(root)
    seed = SPLIT_SEEDS[split]
    for f in sorted(d.glob(f"charged5_{split}_seed{seed}_n*.npz"), key=lambda f: int(f.stem.rsplit("_n", 1)[1])):
        if int(f.stem.rsplit("_n", 1)[1]) >= num:
            with np.load(f) as z:
                return {k: z[k][:num] for k in ("loc", "vel", "charges")}
    if verbose:
        print(f"simulating {num} {split} systems -> {d}")
    loc, vel, charges = simulate_charged(num, seed)
    path = d / f"charged5_{split}_seed{seed}_n{num}.npz"
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, loc=loc, vel=vel, charges=charges)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written file
    return {"loc": loc, "vel": vel, "charges": charges}


def nbody_task(split: str, num: int | None = None, root=None, dtype=None):
    """The prediction task as torch tensors: ``(pos, vel, charges, target)``.

    ``pos, vel, target``: ``[S, 5, 3]`` (frames 30, 30, 40); ``charges``: ``[S, 5]``.
    """
    import torch

    z = load_split(split, num, root)
    dtype = dtype or torch.get_default_dtype()
    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return t(z["loc"][:, FRAME_IN]), t(z["vel"][:, FRAME_IN]), t(z["charges"]), t(z["loc"][:, FRAME_OUT])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Generate and cache the charged N-body data set.")
    ap.add_argument("--full", action="store_true", help="the full 3000/2000/2000 split (default: 500/200/200)")
    ap.add_argument("--root", default=None, help="cache directory (default ~/.cache/geo/nbody)")
    args = ap.parse_args(argv)
    sizes = FULL_SIZES if args.full else SMALL_SIZES
    for split, n in sizes.items():
        z = load_split(split, n, args.root, verbose=True)
        print(f"{split}: {len(z['loc'])} simulations, {z['loc'].shape[1]} frames")
    print(f"cached under {cache_dir(args.root)}")


if __name__ == "__main__":
    main()
