"""N-body data set, short training runs, and soft equivariance via geo.regularizers."""

import numpy as np
import pytest
import torch

from geo.equivariant import NBodyPonita, batch_from_sizes
from geo.equivariant.nbody import FRAME_IN, FRAME_OUT, load_split, nbody_task, simulate_charged
from geo.transforms import axis_angle_to_rotmat



@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_simulator_shapes_charges_and_prefix_determinism():
    loc, vel, q = simulate_charged(3, seed=7)
    assert loc.shape == vel.shape == (3, 49, 5, 3) and q.shape == (3, 5)
    assert set(np.unique(q)) <= {-1.0, 1.0}
    loc1, _, q1 = simulate_charged(1, seed=7, start=2)  # simulation i depends only on (seed, i)
    assert np.array_equal(loc1[0], loc[2]) and np.array_equal(q1[0], q[2])
    # velocities are the position increments (semi-implicit Euler), frame spacing 100 steps of 0.001
    step = (loc[:, 31] - loc[:, 30]) / 0.1
    assert np.allclose(step, (vel[:, 30] + vel[:, 31]) / 2, atol=0.2)
    # without clipping, pairwise forces cancel (Newton's third law): total momentum is conserved
    _, v_free, _ = simulate_charged(2, seed=7, max_force=np.inf)
    p = v_free.sum(2)
    assert np.abs(p - p[:, :1]).max() < 1e-9


def test_cache_is_written_once_and_reused(tmp_path):
    a = load_split("val", 4, root=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = load_split("val", 3, root=tmp_path)  # served from the larger cached file
    assert files[0].stat().st_mtime_ns == mtime and len(list(tmp_path.glob("*.npz"))) == 1
    assert np.array_equal(a["loc"][:3], b["loc"])
    pos, vel, q, tgt = nbody_task("val", 3, root=tmp_path)
    assert pos.shape == tgt.shape == (3, 5, 3) and q.shape == (3, 5)
    assert torch.allclose(pos.double(), torch.from_numpy(a["loc"][:3, FRAME_IN]))
    assert torch.allclose(tgt.double(), torch.from_numpy(a["loc"][:3, FRAME_OUT]))


def _flat(pos, vel, q, idx):
    return pos[idx].reshape(-1, 3), vel[idx].reshape(-1, 3), q[idx].reshape(-1), batch_from_sizes([5] * len(idx))


def test_training_loss_decreases_on_nbody(tmp_path):
    pos, vel, q, tgt = nbody_task("train", 40, root=tmp_path)
    torch.manual_seed(0)
    model = NBodyPonita(hidden=16, layers=2, num_ori=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    idx = torch.arange(40)
    p, v, c, b = _flat(pos, vel, q, idx)
    y = tgt.reshape(-1, 3)
    losses = []
    for _ in range(40):
        loss = ((model(p, v, c, b) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_equivariance_regularizer_makes_a_plain_model_softly_equivariant():
    """Kim et al. (ICML 2023) regulariser attached to a non-equivariant N-body model.

    The model is a single linear map from the 5 stacked velocities to the 5
    displacements (``[15] -> [15]``), fitted to *rotation-noisy* targets. SO(3)
    acts on both sides as ``I_5 ⊗ R``. With the regulariser the fitted map is
    much closer to its Reynolds projection, and its measured equivariance error
    drops.
    """
    from geo.regularizers import equivariance as eqmod

    g = torch.Generator().manual_seed(0)
    Rs = axis_angle_to_rotmat(torch.randn(64, 3, generator=g, dtype=torch.float64) * 2)
    rho = torch.stack([torch.kron(torch.eye(5, dtype=torch.float64), R) for R in Rs])
    vel = torch.randn(256, 15, generator=g, dtype=torch.float64)
    skew = torch.randn(15, 15, generator=g, dtype=torch.float64) * 0.3  # a non-equivariant bias in the data
    target = vel + vel @ skew.T

    def fit(strength):
        torch.manual_seed(0)
        layer = torch.nn.Linear(15, 15, bias=False).double()
        reg = eqmod.EquivarianceRegularizer(weight=strength, symmetries={"so3": [(rho, rho)]})
        opt = torch.optim.Adam(layer.parameters(), lr=0.05)
        for _ in range(200):
            loss = ((layer(vel) - target) ** 2).mean() + (reg(layer) if strength else 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return layer

    def rotation_error(layer):
        R = axis_angle_to_rotmat(torch.tensor([0.7, -1.1, 0.4], dtype=torch.float64))
        rot = torch.kron(torch.eye(5, dtype=torch.float64), R)
        with torch.no_grad():
            return float((layer(vel @ rot.T) - layer(vel) @ rot.T).norm() / layer(vel).norm())

    plain, soft = fit(0.0), fit(10.0)
    e_plain, e_soft = rotation_error(plain), rotation_error(soft)
    print(f"rotation error: plain {e_plain:.3f}, regularised {e_soft:.4f}")
    assert e_soft < 0.2 * e_plain, (e_plain, e_soft)
