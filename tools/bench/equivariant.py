"""Benchmark: PΘNITA vs EGNN on charged N-body, at equal wall-clock budget.

Both models train side by side in one process on the same data, batches and
random rotations (Adam, lr 5e-3, gradient clipping 1.0, batch 100, MSE on
positions at frame 40). Their steps are interleaved and each model's clock
counts only its own steps, so each gets the same number of seconds under the
same machine load (on a shared CPU, training one model after the other can
hand one of them a quieter machine). Both follow the same learning-rate
schedule over their own time budget (2 % warm-up, cosine decay to 0). Then it
reports test MSE, time per epoch, parameter count and the measured rotation
equivariance error (relative error of the predicted displacement under a
random SE(3) element, on test systems; EGNN's is float32 round-off).

PΘNITA's spatial kernel is also conditioned on ``q_i q_j``, the edge input
EGNN has (``--no-edge-charges``: the paper's inputs only).

    python tools/bench/equivariant.py --quick      # < 2 min on 2 CPU cores, small data set
    python tools/bench/equivariant.py              # full 3000/2000/2000 split, longer budget

Last line: JSON with ``mse_ponita``, ``mse_egnn``, ``equivariance_error``.
"""

from __future__ import annotations

import argparse
import json
import math
import time


def _batches(n, bs, gen):
    import torch

    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + bs] for i in range(0, n, bs)]


def _flat(pos, vel, q, idx):
    from geo.equivariant.graph import batch_from_sizes

    p, v, c = pos[idx], vel[idx], q[idx]
    b = batch_from_sizes([p.shape[1]] * len(idx))
    return p.reshape(-1, 3), v.reshape(-1, 3), c.reshape(-1), b


def evaluate(model, data, bs=500):
    import torch

    pos, vel, q, tgt = data
    model.eval()
    se, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(pos), bs):
            idx = torch.arange(i, min(i + bs, len(pos)))
            p, v, c, b = _flat(pos, vel, q, idx)
            se += float(((model(p, v, c, b) - tgt[idx].reshape(-1, 3)) ** 2).sum())
            n += tgt[idx].numel()
    return se / n


def equivariance_error(model, data, num=100, seed=0):
    """Relative error ‖R f(x) − f(Rx + t)‖ / ‖f(x)‖ of the displacement, one random SE(3) per system."""
    import torch

    from geo.transforms import axis_angle_to_rotmat

    pos, vel, q, _ = data
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(min(num, len(pos)))
    p, v, c, b = _flat(pos, vel, q, idx)
    R = axis_angle_to_rotmat(torch.randn(len(idx), 3, generator=g, dtype=torch.float64)).to(p.dtype)[b]
    t = (torch.randn(len(idx), 3, generator=g) * 3).to(p.dtype)[b]
    rot = lambda a: torch.einsum("nij,nj->ni", R, a)  # noqa: E731
    model.eval()
    with torch.no_grad():
        d = model(p, v, c, b) - p
        d2 = model(rot(p) + t, rot(v), c, b) - (rot(p) + t)
    return float((rot(d) - d2).norm() / d.norm())


def random_rotations(num, gen):
    """``[num, 3, 3]`` rotations, uniform on SO(3) (normalised Gaussian quaternions)."""
    import torch

    w, x, y, z = torch.nn.functional.normalize(torch.randn(num, 4, generator=gen), dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(num, 3, 3)


class Trainer:
    """Adam + clipping, one batch per :meth:`step`, timed on its own clock.

    With ``augment`` every system gets a fresh random rotation per batch:
    rotating inputs and targets is the same as rotating the orientation grid
    (the reference N-body code does the latter), and it stops a fiber-bundle
    model from fitting its grid's small anisotropy. It is a no-op for EGNN,
    which is exactly equivariant; both models get it.

    The learning rate follows a schedule in the fraction of the *time* budget
    this model has used (``cosine``: linear warm-up over the first 2 %, then
    cosine decay to 0; ``constant``), so both models get the same schedule
    over the same seconds.
    """

    def __init__(self, model, train_data, seconds, lr, bs=100, seed=0, augment=True, schedule="cosine"):
        import torch

        self.model, self.data, self.seconds, self.lr, self.bs = model, train_data, seconds, lr, bs
        self.augment, self.schedule = augment, schedule
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(seed)
        self.queue, self.used, self.seen, self.losses = [], 0.0, 0, []
        self._tot = self._cnt = 0

    def lr_at(self, frac):
        if self.schedule == "constant":
            return self.lr
        warm = 0.02
        if frac < warm:
            return self.lr * (frac / warm)
        return self.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warm) / (1 - warm))))

    @property
    def done(self):
        return self.used >= self.seconds

    @property
    def epochs(self):
        return self.seen / len(self.data[0])

    def step(self):
        import torch

        t0 = time.perf_counter()
        pos, vel, q, tgt = self.data
        if not self.queue:
            self.queue = _batches(len(pos), self.bs, self.gen)
        idx = self.queue.pop(0)
        p, v, c, b = _flat(pos, vel, q, idx)
        y = tgt[idx].reshape(-1, 3)
        if self.augment:
            R = random_rotations(len(idx), self.gen).to(p.dtype)[b]
            p, v, y = (torch.einsum("nij,nj->ni", R, a) for a in (p, v, y))
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.used / self.seconds)
        self.model.train()
        loss = ((self.model(p, v, c, b) - y) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.seen += len(idx)
        self._tot, self._cnt = self._tot + loss.item() * len(idx), self._cnt + len(idx)
        if not self.queue:  # end of an epoch
            self.losses.append(self._tot / self._cnt)
            self._tot = self._cnt = 0
        self.used += time.perf_counter() - t0


def train_side_by_side(trainers: dict, log=None):
    """Interleave the trainers' steps, always advancing the one that has used the least time.

    Each model trains for its own budget of seconds, measured around its own
    steps only, and both see the machine under the same load (which matters on
    a shared machine, where a model trained after the other could get a
    quieter or a busier CPU).
    """
    next_log = {k: 1 for k in trainers}
    while not all(t.done for t in trainers.values()):
        name, tr = min(((k, t) for k, t in trainers.items() if not t.done), key=lambda kt: kt[1].used)
        tr.step()
        if log and tr.epochs >= next_log[name] and tr.losses:
            log(f"  {name}: epoch {int(tr.epochs)}: train mse {tr.losses[-1]:.5f} ({tr.used:.0f}s)")
            next_log[name] = int(tr.epochs) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data set, 40 s per model (< 2 min total)")
    ap.add_argument("--seconds", type=float, default=None, help="training budget per model (default 40 quick / 1200)")
    ap.add_argument("--num-ori", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--basis-dim", type=int, default=32)
    ap.add_argument("--widening", type=int, default=4, help="ConvNeXt MLP widening of PΘNITA (paper: 4)")
    ap.add_argument("--length-scale", type=float, default=4.0, help="PΘNITA kernel length scale (~ median distance)")
    ap.add_argument("--no-augment", action="store_true", help="train without random rotations")
    ap.add_argument("--no-edge-charges", action="store_true",
                    help="PΘNITA without the q_i q_j edge attribute (the paper's N-body inputs; EGNN always has it)")
    ap.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (both models unless --lr-egnn)")
    ap.add_argument("--lr-egnn", type=float, default=None, help="EGNN learning rate (default: --lr)")
    ap.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                    help="learning-rate schedule over each model's time budget (the same for both)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small ops on a shared CPU)")
    ap.add_argument("--root", default=None, help="N-body cache dir (default ~/.cache/geo/nbody)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
    import torch

    from geo.equivariant import NBodyPonita
    from geo.equivariant.egnn import NBodyEGNN
    from geo.equivariant.nbody import FULL_SIZES, SMALL_SIZES, nbody_task

    torch.set_num_threads(args.threads)
    sizes = SMALL_SIZES if args.quick else FULL_SIZES
    seconds = args.seconds or (40.0 if args.quick else 1200.0)
    t_data = time.perf_counter()
    train_data = nbody_task("train", sizes["train"], args.root)
    test_data = nbody_task("test", sizes["test"], args.root)
    print(f"data: {sizes['train']} train / {sizes['test']} test systems ({time.perf_counter() - t_data:.1f}s)")
    static = float(((test_data[0] - test_data[3]) ** 2).mean())
    print(f"reference: 'no motion' test MSE {static:.4f}")

    log = print if args.verbose else None
    builders = {
        "ponita": lambda: NBodyPonita(hidden=args.hidden, layers=args.layers, num_ori=args.num_ori,
                                    basis_dim=args.basis_dim, widening=args.widening,
                                    length_scale=args.length_scale, edge_charges=not args.no_edge_charges),
        "egnn": lambda: NBodyEGNN(hidden=64, layers=4),
    }
    lrs = {"ponita": args.lr, "egnn": args.lr_egnn or args.lr}
    models, trainers = {}, {}
    for name, build in builders.items():
        torch.manual_seed(0)
        models[name] = build()
        trainers[name] = Trainer(models[name], train_data, seconds, lrs[name], seed=0,
                                 augment=not args.no_augment, schedule=args.schedule)
    train_side_by_side(trainers, log)
    results = {}
    for name, model in models.items():
        tr = trainers[name]
        params = sum(p.numel() for p in model.parameters())
        mse = evaluate(model, test_data)
        eq = equivariance_error(model, test_data)
        results[name] = {"mse": mse, "params": params, "epochs": tr.epochs,
                         "sec_per_epoch": tr.used / max(tr.epochs, 1e-9), "equivariance_error": eq}
        print(f"{name:7s} params {params:7d}  epochs {tr.epochs:6.1f}  {results[name]['sec_per_epoch']:.3f} s/epoch"
              f"  test MSE {mse:.5f}  equivariance error {eq:.2e}")

    print(json.dumps({
        "mse_ponita": round(results["ponita"]["mse"], 6),
        "mse_egnn": round(results["egnn"]["mse"], 6),
        "equivariance_error": float(f"{results['ponita']['equivariance_error']:.3g}"),
        "equivariance_error_egnn": float(f"{results['egnn']['equivariance_error']:.3g}"),
        "params_ponita": results["ponita"]["params"],
        "params_egnn": results["egnn"]["params"],
        "sec_per_epoch_ponita": round(results["ponita"]["sec_per_epoch"], 3),
        "sec_per_epoch_egnn": round(results["egnn"]["sec_per_epoch"], 3),
        "epochs_ponita": round(results["ponita"]["epochs"], 1),
        "epochs_egnn": round(results["egnn"]["epochs"], 1),
        "seconds_per_model": seconds,
        "num_ori": args.num_ori,
        "hidden": args.hidden,
        "layers": args.layers,
        "basis_dim": args.basis_dim,
        "widening": args.widening,
        "length_scale": args.length_scale,
        "augment": not args.no_augment,
        "edge_charges": not args.no_edge_charges,
        "lr": args.lr,
        "lr_egnn": lrs["egnn"],
        "schedule": args.schedule,
        "train_systems": sizes["train"],
        "test_systems": sizes["test"],
    }))


if __name__ == "__main__":
    main()
