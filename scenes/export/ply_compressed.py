"""SuperSplat / PlayCanvas compressed 3DGS PLY: write and read.

Layout (binary little-endian PLY, three elements)::

    element chunk ceil(N / 256)      18 x float:  min_x min_y min_z max_x max_y max_z
                                                  min_scale_x .. min_scale_z max_scale_x .. max_scale_z
                                                  min_r min_g min_b max_r max_g max_b
    element vertex N                 4 x uint:    packed_position packed_rotation packed_scale packed_color
    element sh N          (optional) 3 * ((d+1)^2 - 1) x uchar: f_rest_0 ..   (d = 1, 2, 3)

Gaussians are sorted along a 10-bit Morton curve of their centres, then cut
into chunks of 256 consecutive splats; each chunk stores the bounds that its
splats are quantised in:

* position: 11/10/11 bits (x in bits 21-31, y in 11-20, z in 0-10), unorm in the chunk's box;
* scale: the log-scales, 11/10/11 bits in the chunk's log-scale box (clamped to [-20, 20]);
* colour: RGBA 8 bits each (R in bits 24-31 ... A in 0-7); RGB is the DC colour
  ``0.5 + SH_C0 * dc`` as a unorm in the chunk's colour box, A is ``sigmoid(opacity)``;
* rotation: "smallest three": the index (in ``rot_0..rot_3`` = wxyz order) of the
  largest-magnitude component of the normalised quaternion in bits 30-31, made
  positive, and the other three, each in ``[-1/sqrt 2, 1/sqrt 2]``, as 10-bit unorms in index order;
* SH rest coefficients: one byte each, ``floor((v / 8 + 0.5) * 256)`` clamped,
  channel-major as in the INRIA layout (``f_rest_{c * R + k}``).

A reader may also meet the older 12-float chunk without the colour box (colour
is then a plain unorm). Format facts are from PlayCanvas' public engine and
SuperSplat sources; the code is this project's own.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from scenes.export.plyfile import PlyElement, parse_ply_header
from scenes.payloads import SH_C0, GaussianCloud

__all__ = ["write_compressed_ply", "read_compressed_ply", "morton_order", "CHUNK_SIZE"]

CHUNK_SIZE = 256
_CHUNK_PROPS = [
    "min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
    "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z",
    "min_r", "min_g", "min_b", "max_r", "max_g", "max_b",
]
_VERTEX_PROPS = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]
# -- writing ------------------------------------------------------------------------------


def morton_order(means: np.ndarray) -> np.ndarray:
    """``[N]`` indices sorting ``means`` along a 10-bit-per-axis Morton (Z-order) curve,
    the order :func:`write_compressed_ply` stores Gaussians in (stable for ties)."""
    p = np.asarray(means, np.float64)
    if len(p) == 0:
        return np.zeros(0, np.int64)
    lo, hi = p.min(0), p.max(0)
    q = np.floor(1024 * (p - lo) / np.where(hi > lo, hi - lo, 1.0))
    q = np.clip(q, 0, 1023).astype(np.uint64)
    code = np.zeros(len(p), np.uint64)
    for bit in range(10):
        for axis in range(3):
            code |= ((q[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return np.argsort(code, kind="stable")


def _unorm(x: np.ndarray, bits: int) -> np.ndarray:
    t = (1 << bits) - 1
    return np.clip(np.floor(x * t + 0.5), 0, t).astype(np.uint32)


def _chunk_bounds(v: np.ndarray, n: int, nchunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk min / max of ``v [N, D]`` (the last chunk may be short)."""
    pad = nchunks * CHUNK_SIZE - n
    lo = np.concatenate([v, np.repeat(v[-1:], pad, 0)]).reshape(nchunks, CHUNK_SIZE, -1)
    return lo.min(1), lo.max(1)


def _normalise(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(v - lo) / (hi - lo)`` per chunk row, clamped to [0, 1]; 0 for (near-)empty ranges."""
    rng = hi - lo
    t = np.where(rng < 1e-5, 0.0, (v - lo) / np.where(rng < 1e-5, 1.0, rng))
    return np.clip(t, 0.0, 1.0)


def _pack_111011(t: np.ndarray) -> np.ndarray:
    return (_unorm(t[:, 0], 11) << 21) | (_unorm(t[:, 1], 10) << 11) | _unorm(t[:, 2], 11)


def _pack_rotation(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    largest = np.argmax(np.abs(q), axis=1)
    q = q * np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None]
    out = largest.astype(np.uint32)
    for slot in range(3):
        idx = np.where(slot < largest, slot, slot + 1)  # the three other components, in index order
        out = (out << 10) | _unorm(q[np.arange(len(q)), idx] * (math.sqrt(2) * 0.5) + 0.5, 10)
    return out


def write_compressed_ply(path: str | os.PathLike, cloud: GaussianCloud) -> Path:
    """Write ``cloud`` as a SuperSplat compressed PLY (atomic).

    Gaussians with NaN/Inf parameters are dropped with a warning that counts
    them. The file stores the Gaussians in :func:`morton_order`.

    Args:
        path: the ``.ply`` file (conventionally ``*.compressed.ply``).
        cloud: RGB Gaussians (``sh [N, K, 3]``, any degree 0..3).
    """
    from geo.fileio import atomic_write_bytes
    from scenes.export.ply_gaussians import finite_gaussians

    cloud = finite_gaussians(cloud, f"write_compressed_ply({path})")
    n, k, ch = cloud.sh.shape
    if ch != 3:
        raise ValueError(f"write_compressed_ply({path}): needs RGB SH (sh [N, K, 3]), got {ch} channels")
    order = morton_order(cloud.means)
    means = np.asarray(cloud.means, np.float64)[order]
    log_s = np.asarray(cloud.log_scales, np.float64)[order]
    quats = np.asarray(cloud.quats, np.float64)[order]
    sh = np.asarray(cloud.sh, np.float64)[order]
    alpha = 1.0 / (1.0 + np.exp(-np.asarray(cloud.opacity_logits, np.float64)[order]))
    rgb = 0.5 + SH_C0 * sh[:, 0, :]

    nchunks = -(-n // CHUNK_SIZE)
    rows = np.arange(n) // CHUNK_SIZE
    p_lo, p_hi = _chunk_bounds(means, n, nchunks)
    s_lo, s_hi = (np.clip(b, -20, 20) for b in _chunk_bounds(log_s, n, nchunks))
    c_lo, c_hi = _chunk_bounds(rgb, n, nchunks)
    chunk = np.concatenate([p_lo, p_hi, s_lo, s_hi, c_lo, c_hi], 1).astype("<f4")
    # recompute the bounds that the float32 file will hold, so decoding matches exactly
    b = chunk.astype(np.float64)
    p_lo, p_hi, s_lo, s_hi, c_lo, c_hi = (b[:, 3 * i : 3 * i + 3] for i in range(6))

    vert = np.empty((n, 4), "<u4")
    vert[:, 0] = _pack_111011(_normalise(means, p_lo[rows], p_hi[rows]))
    vert[:, 1] = _pack_rotation(quats)
    vert[:, 2] = _pack_111011(_normalise(log_s, s_lo[rows], s_hi[rows]))
    c = _normalise(rgb, c_lo[rows], c_hi[rows])
    vert[:, 3] = (_unorm(c[:, 0], 8) << 24) | (_unorm(c[:, 1], 8) << 16) | (_unorm(c[:, 2], 8) << 8) | _unorm(alpha, 8)

    header = ["ply", "format binary_little_endian 1.0", "comment written by geo (scenes.export.ply_compressed)",
              f"element chunk {nchunks}", *(f"property float {p}" for p in _CHUNK_PROPS),
              f"element vertex {n}", *(f"property uint {p}" for p in _VERTEX_PROPS)]
    parts = [chunk.tobytes(), vert.tobytes()]
    if k > 1:
        rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # channel-major
        header += [f"element sh {n}", *(f"property uchar f_rest_{i}" for i in range(rest.shape[1]))]
        parts.append(np.clip(np.floor((rest / 8 + 0.5) * 256), 0, 255).astype(np.uint8).tobytes())
    data = ("\n".join(header) + "\nend_header\n").encode("ascii") + b"".join(parts)
    return atomic_write_bytes(path, data)


# -- reading ------------------------------------------------------------------------------


def _check_layout(elements: list[PlyElement], path) -> tuple[PlyElement, PlyElement, PlyElement | None]:
    names = [e.name for e in elements]
    if names not in (["chunk", "vertex"], ["chunk", "vertex", "sh"]):
        raise ValueError(f"{path}: not a compressed 3DGS PLY: elements {names}, expected ['chunk', 'vertex'(, 'sh')]")
    chunk, vertex = elements[0], elements[1]
    cp = [p for _, p in chunk.properties]
    if cp not in (_CHUNK_PROPS, _CHUNK_PROPS[:12]) or any(t not in ("float", "float32") for t, _ in chunk.properties):
        raise ValueError(f"{path}: not a compressed 3DGS PLY: chunk properties {cp[:20]} are not the 12 or 18 floats {_CHUNK_PROPS}")
    if [p for _, p in vertex.properties] != _VERTEX_PROPS or any(t not in ("uint", "uint32") for t, _ in vertex.properties):
        raise ValueError(f"{path}: not a compressed 3DGS PLY: vertex properties must be uint {_VERTEX_PROPS}")
    if chunk.count != -(-vertex.count // CHUNK_SIZE):
        raise ValueError(f"{path}: malformed compressed PLY: {chunk.count} chunks for {vertex.count} splats, "
                         f"expected ceil({vertex.count} / {CHUNK_SIZE}) = {-(-vertex.count // CHUNK_SIZE)}")
    sh = elements[2] if len(elements) == 3 else None
    if sh is not None:
        want = [f"f_rest_{i}" for i in range(len(sh.properties))]
        if (len(sh.properties) not in (9, 24, 45) or [p for _, p in sh.properties] != want
                or any(t not in ("uchar", "uint8") for t, _ in sh.properties) or sh.count != vertex.count):
            raise ValueError(f"{path}: malformed compressed PLY: 'sh' must hold {vertex.count} rows of 9, 24 or 45 "
                             "uchar f_rest_i properties")
    return chunk, vertex, sh


def _unpack_unorm(v: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return ((v >> np.uint32(shift)) & np.uint32((1 << bits) - 1)).astype(np.float64) / ((1 << bits) - 1)


def _unpack_111011(v: np.ndarray) -> np.ndarray:
    return np.stack([_unpack_unorm(v, 21, 11), _unpack_unorm(v, 11, 10), _unpack_unorm(v, 0, 11)], 1)


def read_compressed_ply(path: str | os.PathLike) -> GaussianCloud:
    """Read a SuperSplat compressed PLY into a float32 :class:`GaussianCloud`
    (values within the format's quantisation; Gaussians in file order).

    Raises:
        ValueError: the file is truncated, malformed or not a compressed PLY;
            the message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    fmt, elements, body = parse_ply_header(raw, path)
    if fmt != "binary_little_endian":
        raise ValueError(f"{path}: compressed PLY must be binary_little_endian, got {fmt}")
    chunk, vertex, sh_el = _check_layout(elements, path)
    n, nc, ncp = vertex.count, chunk.count, len(chunk.properties)
    nrest = len(sh_el.properties) if sh_el is not None else 0
    size = nc * ncp * 4 + n * 16 + n * nrest
    if len(raw) - body != size:
        what = "truncated" if len(raw) - body < size else "malformed (trailing bytes)"
        raise ValueError(f"{path}: {what} compressed PLY: body has {len(raw) - body} bytes, the header declares {size}")
    if n == 0:
        raise ValueError(f"{path}: compressed PLY holds no splats")
    ch = np.frombuffer(raw, "<f4", nc * ncp, body).reshape(nc, ncp).astype(np.float64)
    vert = np.frombuffer(raw, "<u4", n * 4, body + nc * ncp * 4).reshape(n, 4)
    rows = np.arange(n) // CHUNK_SIZE
    c = ch[rows]
    with np.errstate(all="ignore"):  # corrupt bounds give NaN / Inf, rejected below
        means = c[:, 0:3] + (c[:, 3:6] - c[:, 0:3]) * _unpack_111011(vert[:, 0])
        log_s = c[:, 6:9] + (c[:, 9:12] - c[:, 6:9]) * _unpack_111011(vert[:, 2])
        col = np.stack([_unpack_unorm(vert[:, 3], s, 8) for s in (24, 16, 8)], 1)
        if ncp == 18:
            col = c[:, 12:15] + (c[:, 15:18] - c[:, 12:15]) * col
        alpha = np.clip(_unpack_unorm(vert[:, 3], 0, 8), 0.5 / 255, 1 - 0.5 / 255)

    r = vert[:, 1]
    abc = np.stack([(_unpack_unorm(r, s, 10) - 0.5) / (math.sqrt(2) * 0.5) for s in (20, 10, 0)], 1)
    largest = (r >> np.uint32(30)).astype(np.int64)
    quats = np.empty((n, 4))
    rows_n = np.arange(n)
    quats[rows_n, largest] = np.sqrt(np.maximum(0.0, 1.0 - (abc * abc).sum(1)))
    for slot in range(3):
        quats[rows_n, np.where(slot < largest, slot, slot + 1)] = abc[:, slot]

    k = 1 + nrest // 3
    sh = np.zeros((n, k, 3))
    sh[:, 0] = (col - 0.5) / SH_C0
    if nrest:
        b = np.frombuffer(raw, np.uint8, n * nrest, body + nc * ncp * 4 + n * 16).reshape(n, 3, k - 1)
        sh[:, 1:] = ((b.astype(np.float64) + 0.5) / 256 - 0.5).transpose(0, 2, 1) * 8
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    try:
        return GaussianCloud(f32(means), f32(quats), f32(log_s), f32(np.log(alpha / (1 - alpha))), f32(sh))
    except ValueError as e:
        raise ValueError(f"{path}: corrupt compressed PLY: {e}") from None
