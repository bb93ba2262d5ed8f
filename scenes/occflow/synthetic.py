"""Synthetic dynamic driving scenes with occupancy, flow and surround-camera images.

A scene (world frame: x forward, y left, z up, metres) holds a ground plane
(``z <= 0``), static boxes ("barrier") and cylinders ("pole"), and objects moving
at constant velocity along their heading ("car", "truck", "pedestrian"). The ego
vehicle drives along +x at ``ego_speed``; each frame's grid and cameras live in
that frame's ego frame, as in Occ3D / OpenOcc. Per frame:

* ``labels [X, Y, Z]`` (a voxel takes the class of the last object that covers
  any of its 2x2x2 sub-points; ground below; else free),
* ``flow [X, Y, Z, 2]``: the object's world-frame xy velocity in m/s (ego motion
  removed, as OpenOcc), 0 for static voxels,
* ``mask_camera [X, Y, Z]``: voxels some camera ray passes through or stops at,
* per camera: ``semantics [H, W]`` (free where nothing is hit) and z-``depth [H, W]``
  (0 = none), by exact ray casting through ``labels`` (:mod:`.raycast`),
* ``cam_to_ego [C, 4, 4]`` (OpenCV axes) and ``Ks [C, 3, 3]``.

Everything derives from ``seed`` (``numpy.random.default_rng``), so sequences are
reproducible; the defaults are small (40 x 40 x 8 voxels of 0.5 m, 6 cameras of
64 x 48, 5 frames at 2 Hz).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CLASSES", "DYNAMIC_CLASSES", "FREE", "SyntheticConfig", "Frame", "Sequence", "make_sequence",
           "rig_cameras"]

CLASSES = ("car", "truck", "pedestrian", "barrier", "pole", "ground", "free")
DYNAMIC_CLASSES = ("car", "truck", "pedestrian")
FREE = CLASSES.index("free")
_C = {n: i for i, n in enumerate(CLASSES)}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size of the synthetic world; small by default so tests and ``--quick`` stay fast."""

    grid: tuple[int, int, int] = (40, 40, 8)
    voxel_size: float = 0.5
    z_min: float = -0.5  # the grid spans z in [z_min, z_min + Z * voxel_size]
    frames: int = 5
    dt: float = 0.5  # seconds between frames (nuScenes key frames are 2 Hz)
    ego_speed: float = 1.0  # m/s along +x
    n_cameras: int = 6
    width: int = 64
    height: int = 48
    hfov_deg: float = 75.0
    camera_height: float = 1.6
    n_cars: int = 3
    n_trucks: int = 1
    n_pedestrians: int = 3
    n_barriers: int = 3
    n_poles: int = 4

    @property
    def origin(self) -> tuple[float, float, float]:
        X, Y, _ = self.grid
        return (-X * self.voxel_size / 2, -Y * self.voxel_size / 2, self.z_min)


@dataclass
class Frame:
    """One time step; arrays as described in the module docstring."""

    time: float
    ego_position: np.ndarray  # [3] world
    labels: np.ndarray
    flow: np.ndarray
    mask_camera: np.ndarray
    semantics: np.ndarray  # [C, H, W] int64
    depth: np.ndarray  # [C, H, W] float32
    cam_to_ego: np.ndarray  # [C, 4, 4]
    Ks: np.ndarray  # [C, 3, 3]


@dataclass
class Sequence:
    config: SyntheticConfig
    seed: int
    frames: list[Frame] = field(default_factory=list)

    def ego_to_ego(self, src: int, dst: int) -> np.ndarray:
        """``T_dst_src``: maps frame ``src`` ego coordinates to frame ``dst``'s (pure translation here)."""
        T = np.eye(4)
        T[:3, 3] = self.frames[src].ego_position - self.frames[dst].ego_position
        return T


@dataclass
class _Object:
    cls: int
    kind: str  # "box" | "cylinder"
    center: np.ndarray  # [3] world, at t = 0 (z = bottom)
    size: np.ndarray  # [3] length, width, height (cylinder: 2r, 2r, h)
    yaw: float
    velocity: np.ndarray  # [2] world xy


def rig_cameras(cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """``cam_to_ego [C, 4, 4]`` (OpenCV axes) and ``Ks [C, 3, 3]`` of a surround rig at the ego origin.

    Camera ``c`` looks horizontally at yaw ``2 pi c / C`` (0 = +x forward, counter-clockwise),
    slightly pitched down (5 degrees).
    """
    f = cfg.width / 2 / math.tan(math.radians(cfg.hfov_deg) / 2)
    K = np.array([[f, 0, cfg.width / 2], [0, f, cfg.height / 2], [0, 0, 1.0]])
    poses = []
    pitch = math.radians(5.0)
    for c in range(cfg.n_cameras):
        yaw = 2 * math.pi * c / cfg.n_cameras
        fwd = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])  # x_cam
        down = np.cross(fwd, right)  # y_cam = z_cam x x_cam
        T = np.eye(4)
        T[:3, :3] = np.stack([right, down, fwd], 1)
        T[:3, 3] = (0.0, 0.0, cfg.camera_height)
        poses.append(T)
    return np.stack(poses), np.repeat(K[None], cfg.n_cameras, 0)


def _place(rng, cfg: SyntheticConfig) -> list[_Object]:
    half = cfg.grid[0] * cfg.voxel_size / 2
    span = half + cfg.ego_speed * cfg.dt * cfg.frames + 4.0
    objs: list[_Object] = []
    lanes = (-3.5, 3.5)
    for cls, n, size, speed in (("car", cfg.n_cars, (4.2, 1.8, 1.5), (2.0, 6.0)),
                                ("truck", cfg.n_trucks, (7.0, 2.4, 3.0), (1.0, 4.0))):
        for _ in range(n):
            lane = lanes[rng.integers(2)]
            direction = 1.0 if lane < 0 else -1.0  # right-hand traffic
            x = rng.uniform(-span, span)
            v = direction * rng.uniform(*speed)
            objs.append(_Object(_C[cls], "box", np.array([x, lane + rng.uniform(-0.3, 0.3), 0.0]), np.array(size),
                                0.0 if direction > 0 else math.pi, np.array([v, 0.0])))
    for _ in range(cfg.n_pedestrians):
        side = 1.0 if rng.random() < 0.5 else -1.0
        heading = rng.uniform(0, 2 * math.pi)
        s = rng.uniform(0.6, 1.6)
        objs.append(_Object(_C["pedestrian"], "cylinder",
                            np.array([rng.uniform(-half, half), side * rng.uniform(6.0, 8.5), 0.0]),
                            np.array([0.7, 0.7, 1.8]), heading,
                            np.array([s * math.cos(heading), 0.4 * s * math.sin(heading)])))
    for _ in range(cfg.n_barriers):
        side = 1.0 if rng.random() < 0.5 else -1.0
        objs.append(_Object(_C["barrier"], "box", np.array([rng.uniform(-half, half), side * rng.uniform(5.5, max(half - 1, 5.6)), 0.0]),
                            np.array([rng.uniform(1.5, 4.0), 0.6, 1.0]), rng.uniform(-0.3, 0.3), np.zeros(2)))
    for _ in range(cfg.n_poles):
        side = 1.0 if rng.random() < 0.5 else -1.0
        objs.append(_Object(_C["pole"], "cylinder", np.array([rng.uniform(-half, half), side * rng.uniform(5.2, max(half - 0.5, 5.3)), 0.0]),
                            np.array([0.8, 0.8, 3.0]), 0.0, np.zeros(2)))
    # static first so that movers win where they overlap
    return sorted(objs, key=lambda o: float(np.any(o.velocity != 0)))


def _inside(o: _Object, p: np.ndarray, t: float) -> np.ndarray:
    c = o.center[:2] + o.velocity * t
    d = p[..., :2] - c
    z = p[..., 2]
    in_z = (z >= o.center[2]) & (z <= o.center[2] + o.size[2])
    if o.kind == "cylinder":
        return in_z & ((d ** 2).sum(-1) <= (o.size[0] / 2) ** 2)
    cy, sy = math.cos(o.yaw), math.sin(o.yaw)
    lx = d[..., 0] * cy + d[..., 1] * sy
    ly = -d[..., 0] * sy + d[..., 1] * cy
    return in_z & (np.abs(lx) <= o.size[0] / 2) & (np.abs(ly) <= o.size[1] / 2)


def _voxelize(objs, cfg: SyntheticConfig, ego: np.ndarray, t: float):
    X, Y, Z = cfg.grid
    vs = cfg.voxel_size
    o = np.array(cfg.origin)
    sub = (np.array([0.25, 0.75]) * vs)
    ii = [np.arange(n) * vs + o[a] for a, n in enumerate((X, Y, Z))]
    labels = np.full((X, Y, Z), FREE, np.int64)
    flow = np.zeros((X, Y, Z, 2), np.float32)
    centers_z = ii[2] + vs / 2
    labels[:, :, centers_z <= 0] = _C["ground"]
    for ob in objs:
        cover = np.zeros((X, Y, Z), bool)
        for sx in sub:
            for sy in sub:
                for sz in sub:
                    p = np.stack(np.meshgrid(ii[0] + sx, ii[1] + sy, ii[2] + sz, indexing="ij"), -1) + ego
                    cover |= _inside(ob, p, t)
        labels[cover] = ob.cls
        flow[cover] = ob.velocity
    return labels, flow


def make_sequence(seed: int, cfg: SyntheticConfig | None = None) -> Sequence:
    """A deterministic synthetic sequence of ``cfg.frames`` frames."""
    import torch

    from .raycast import cast_rays

    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(seed)
    objs = _place(rng, cfg)
    cam_to_ego, Ks = rig_cameras(cfg)
    H, W = cfg.height, cfg.width
    uu, vv = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    seq = Sequence(cfg, seed)
    for f in range(cfg.frames):
        t = f * cfg.dt
        ego = np.array([cfg.ego_speed * t, 0.0, 0.0])
        labels, flow = _voxelize(objs, cfg, ego, t)
        occ = torch.from_numpy(labels != FREE)
        sems, depths = [], []
        visited = torch.zeros(occ.numel(), dtype=torch.bool)
        for c in range(cfg.n_cameras):
            K = Ks[c]
            rays_cam = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1)
            R = cam_to_ego[c, :3, :3]
            dirs = rays_cam.reshape(-1, 3) @ R.T
            hits = cast_rays(occ, cfg.origin, cfg.voxel_size, torch.from_numpy(cam_to_ego[c, :3, 3]),
                             torch.from_numpy(dirs), want_visited=True)
            visited |= hits.visited
            ok = hits.index >= 0
            sem = np.full(H * W, FREE, np.int64)
            sem[ok.numpy()] = labels.reshape(-1)[hits.index[ok].numpy()]
            # z-depth = distance along the unit ray times the ray's cosine to the optical axis
            cos = 1.0 / np.linalg.norm(rays_cam.reshape(-1, 3), axis=-1)
            dep = np.where(ok.numpy(), hits.dist.numpy() * cos, 0.0).astype(np.float32)
            sems.append(sem.reshape(H, W))
            depths.append(dep.reshape(H, W))
        seq.frames.append(Frame(t, ego, labels, flow, visited.numpy().reshape(labels.shape),
                                np.stack(sems), np.stack(depths), cam_to_ego.copy(), Ks.copy()))
    return seq
