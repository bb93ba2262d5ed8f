"""Benchmark: PΘNITA vs EGNN on charged N-body, at equal wall-clock budget.

Both models train on the same data for the same number of seconds (Adam,
gradient clipping 1.0, batch 100, MSE on positions at frame 40), then report
test MSE, time per epoch, parameter count and the measured rotation
equivariance error (relative error of the predicted displacement under a
random SE(3) element, on test systems; EGNN's is float32 round-off).

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
    import torch

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


def train(model, train_data, seconds, lr, bs=100, seed=0, log=None, augment=True):
    """Adam + clipping for ``seconds``; with ``augment`` every system gets a fresh random rotation per batch.

    Rotating the inputs and targets is the same as rotating the orientation
    grid (the paper's N-body training does it): it stops a fiber-bundle model
    from fitting its grid's small anisotropy. It is a no-op for EGNN, which is
    exactly equivariant; both models get it.
    """
    import torch

    pos, vel, q, tgt = train_data
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    epochs, losses = 0, []
    while time.perf_counter() - t0 < seconds:
        model.train()
        tot, cnt = 0.0, 0
        for idx in _batches(len(pos), bs, gen):
            p, v, c, b = _flat(pos, vel, q, idx)
            y = tgt[idx].reshape(-1, 3)
            if augment:
                R = random_rotations(len(idx), gen).to(p.dtype)[b]
                p, v, y = (torch.einsum("nij,nj->ni", R, a) for a in (p, v, y))
            loss = ((model(p, v, c, b) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot, cnt = tot + loss.item() * len(idx), cnt + len(idx)
            if time.perf_counter() - t0 >= seconds:
                break
        epochs += cnt / len(pos)
        losses.append(tot / cnt)
        if log:
            log(f"  epoch {math.ceil(epochs)}: train mse {losses[-1]:.5f} ({time.perf_counter() - t0:.0f}s)")
    return {"epochs": epochs, "seconds": time.perf_counter() - t0, "train_losses": losses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data set, 40 s per model (< 2 min total)")
    ap.add_argument("--seconds", type=float, default=None, help="training budget per model (default 45 quick / 1200)")
    ap.add_argument("--num-ori", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--basis-dim", type=int, default=32)
    ap.add_argument("--widening", type=int, default=4, help="ConvNeXt MLP widening of PΘNITA (paper: 4)")
    ap.add_argument("--length-scale", type=float, default=4.0, help="PΘNITA kernel length scale (~ median distance)")
    ap.add_argument("--no-augment", action="store_true", help="train without random rotations")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, the same for both models")
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
    results = {}
    builders = {
        "ponita": lambda: NBodyPonita(hidden=args.hidden, layers=args.layers, num_ori=args.num_ori,
                                    basis_dim=args.basis_dim, widening=args.widening,
                                    length_scale=args.length_scale),
        "egnn": lambda: NBodyEGNN(hidden=64, layers=4),
    }
    for name, build in builders.items():
        torch.manual_seed(0)
        model = build()
        params = sum(p.numel() for p in model.parameters())
        st = train(model, train_data, seconds, args.lr, log=log, augment=not args.no_augment)
        mse = evaluate(model, test_data)
        eq = equivariance_error(model, test_data)
        results[name] = {"mse": mse, "params": params, "epochs": st["epochs"],
                         "sec_per_epoch": st["seconds"] / max(st["epochs"], 1e-9), "equivariance_error": eq}
        print(f"{name:7s} params {params:7d}  epochs {st['epochs']:6.1f}  {results[name]['sec_per_epoch']:.2f} s/epoch"
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
        "lr": args.lr,
        "train_systems": sizes["train"],
        "test_systems": sizes["test"],
    }))


if __name__ == "__main__":
    main()
