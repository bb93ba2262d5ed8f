"""Scene payloads: the data a scene-graph node can carry.

Every payload is a dataclass of numpy arrays (plus a few scalars) in the
payload's *local* frame; the node's world transform places it in the scene.
All of them share one small protocol, used by the graph and by
:mod:`scenes.io`:

* ``validate(where)`` checks shapes, dtypes and finiteness, raising
  ``ValueError`` that names ``where``, the field and the expected shape.
  It runs at construction (``__post_init__``), when a payload is added to a
  graph and before it is saved.
* ``bound_points()`` returns ``[M, 3]`` local points whose bounding box is the
  payload's extent (the points themselves for point-like payloads, the 8 AABB
  corners otherwise), or ``None``; ``local_bounds()`` is their min/max.
* ``to_arrays()`` / ``json_fields()`` split the payload into arrays (stored
  bit-exactly in an ``.npz``) and JSON scalars (stored in ``scene.json``);
  ``from_arrays(arrays, where, fields)`` is the inverse and validates.

Array dtypes are kept as given (a float32 mesh stays float32); only lists are
converted with ``np.asarray``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from geo.cameras import CameraModel

__all__ = [
    "Mesh",
    "PointCloud",
    "GaussianCloud",
    "Camera",
    "PAYLOAD_TYPES",
    "register_payload",
    "check_array",
    "SH_C0",
]

SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi)); colour = SH_C0 * dc + 0.5

#: payload class name -> class; the ``"type"`` written to ``scene.json``.
PAYLOAD_TYPES: dict[str, type] = {}


def register_payload(cls: type) -> type:
    """Class decorator: make ``cls`` storable in a scene under its class name."""
    PAYLOAD_TYPES[cls.__name__] = cls
    return cls


_KIND_NAMES = {"f": "float", "iu": "integer", "u1": "uint8", "b": "bool", "f4": "float32"}


def _kind_ok(a: np.ndarray, kinds: tuple[str, ...]) -> bool:
    for k in kinds:
        if k in ("u1", "f4") and a.dtype == np.dtype(k):
            return True
        if k in ("f", "iu", "b") and a.dtype.kind in k:
            return True
    return False


def check_array(
    where: str,
    field: str,
    a: Any,
    shape: tuple,
    kinds: tuple[str, ...],
    dims: dict[str, int],
    finite: bool = True,
) -> np.ndarray:
    """Check one array field and return it as an ndarray (dtype kept).

    Args:
        where: the object being checked, e.g. ``"Mesh"`` or a node path.
        field: the field name, used in the message.
        a: the value.
        shape: expected shape; each entry is an int, a tuple of allowed ints,
            or a symbol (``"V"``) bound on first use through ``dims`` so that
            fields sharing a dimension must agree.
        kinds: allowed dtypes: ``"f"`` any float, ``"iu"`` any integer,
            ``"u1"`` uint8, ``"f4"`` float32, ``"b"`` bool.
        dims: symbol -> size, updated in place.
        finite: reject NaN/Inf (float arrays only).
    """
    desc = "[" + ", ".join("|".join(map(str, s)) if isinstance(s, tuple) else str(s) for s in shape) + "]"
    want = " or ".join(_KIND_NAMES[k] for k in kinds)
    a = np.asarray(a)
    bad = a.ndim != len(shape) or not _kind_ok(a, kinds)
    if not bad:
        for n, s in zip(a.shape, shape):
            if isinstance(s, str):
                if dims.setdefault(s, n) != n:
                    bad = True
            elif isinstance(s, tuple):
                bad |= n not in s
            else:
                bad |= n != s
    if bad:
        bound = ", ".join(f"{k}={v}" for k, v in dims.items() if k in shape)
        raise ValueError(
            f"{where}: field '{field}' must be {'an' if want.startswith('integer') else 'a'} {want} array of shape {desc}"
            f"{f' ({bound})' if bound else ''}, got {a.dtype} array of shape {list(a.shape)}"
        )
    if finite and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"{where}: field '{field}' contains NaN or Inf")
    return a


class _Payload:
    """Shared protocol; subclasses define ``validate``, ``bound_points`` and ``_ARRAYS``."""

    _ARRAYS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.validate(type(self).__name__)

    def validate(self, where: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def bound_points(self) -> np.ndarray | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def local_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(min [3], max [3])`` float64 in the payload's frame, or ``None`` when empty."""
        p = self.bound_points()
        if p is None or len(p) == 0:
            return None
        p = np.asarray(p, dtype=np.float64)
        return p.min(0), p.max(0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The array fields that are set, by name."""
        return {k: np.asarray(getattr(self, k)) for k in self._ARRAYS if getattr(self, k) is not None}

    def json_fields(self) -> dict[str, Any]:
        """Small JSON scalars stored next to the arrays in ``scene.json``."""
        return {}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str, fields: dict | None = None):
        """Rebuild from :meth:`to_arrays` / :meth:`json_fields`; errors name ``where``."""
        unknown = sorted(set(arrays) - set(cls._ARRAYS))
        if unknown:
            raise ValueError(f"{where}: unexpected array(s) {unknown} for {cls.__name__}; expected some of {list(cls._ARRAYS)}")
        kw = cls._fields_from_json(fields or {}, where)  # its errors already name ``where``
        try:
            return cls(**kw, **arrays)
        except TypeError as e:  # a required array is missing
            raise ValueError(f"{where}: cannot build {cls.__name__}: {e}") from None
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def _fields_from_json(cls, fields: dict, where: str) -> dict:
        if fields:
            raise ValueError(f"{where}: unexpected fields {sorted(fields)} for {cls.__name__}")
        return {}


def _image_to_uint8(img) -> np.ndarray:
    """PIL image -> uint8 ``[H, W, 3|4]`` (palette/grey images are expanded to RGB(A))."""
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    return np.array(img, dtype=np.uint8)


def _texture_from_material(material) -> np.ndarray | None:
    """Texture of a trimesh material, or None (also for trimesh's placeholder image)."""
    from trimesh.visual.material import color_image

    img = getattr(material, "image", None)
    if img is None:
        img = getattr(material, "baseColorTexture", None)
    if img is None:
        return None
    tex = _image_to_uint8(img)
    # trimesh gives uv-only meshes (an OBJ without mtllib) a uniform 2x2 stand-in image
    placeholder = np.asarray(color_image())
    if tex.shape == placeholder.shape and np.array_equal(tex, placeholder):
        return None
    return tex


@register_payload
@dataclass(eq=False)
class Mesh(_Payload):
    """Triangle mesh.

    Attributes:
        vertices: ``[V, 3]`` float positions.
        faces: ``[F, 3]`` integer vertex indices, each in ``[0, V)``.
        vertex_colors: optional ``[V, 3|4]`` uint8 RGB(A).
        vertex_normals: optional ``[V, 3]`` float.
        uv: optional ``[V, 2]`` float texture coordinates; ``(0, 0)`` is the
            bottom-left of ``texture`` (OBJ/OpenGL convention), so texel row
            ``= (1 - v) * H``.
        texture: optional ``[H, W, 3|4]`` uint8 image, row 0 at the top; needs ``uv``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None
    vertex_normals: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None

    _ARRAYS: ClassVar[tuple[str, ...]] = ("vertices", "faces", "vertex_colors", "vertex_normals", "uv", "texture")

    def validate(self, where: str) -> None:
        d: dict[str, int] = {}
        self.vertices = check_array(where, "vertices", self.vertices, ("V", 3), ("f",), d)
        self.faces = check_array(where, "faces", self.faces, ("F", 3), ("iu",), d)
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= d["V"]):
            raise ValueError(
                f"{where}: field 'faces' has indices in [{self.faces.min()}, {self.faces.max()}], "
                f"expected [0, {d['V']}) (V={d['V']} vertices)"
            )
        if self.vertex_colors is not None:
            self.vertex_colors = check_array(where, "vertex_colors", self.vertex_colors, ("V", (3, 4)), ("u1",), d)
        if self.vertex_normals is not None:
            self.vertex_normals = check_array(where, "vertex_normals", self.vertex_normals, ("V", 3), ("f",), d)
        if self.uv is not None:
            self.uv = check_array(where, "uv", self.uv, ("V", 2), ("f",), d)
        if self.texture is not None:
            self.texture = check_array(where, "texture", self.texture, ("H", "W", (3, 4)), ("u1",), d)
            if self.uv is None:
                raise ValueError(f"{where}: field 'texture' is set but 'uv' is None; a texture needs uv [V, 2]")

    def bound_points(self) -> np.ndarray:
        return self.vertices

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    @classmethod
    def from_trimesh(cls, tm) -> "Mesh":
        """From a ``trimesh.Trimesh``: vertices, faces, and whichever of vertex
        colours, uv + texture image and *stored* vertex normals it has (normals
        trimesh would compute on demand are not materialised)."""
        kw: dict[str, Any] = {}
        visual = tm.visual
        if visual.kind == "texture" and getattr(visual, "uv", None) is not None and len(visual.uv) == len(tm.vertices):
            kw["uv"] = np.array(visual.uv, dtype=np.float64)
            tex = _texture_from_material(visual.material)
            if tex is not None:
                kw["texture"] = tex
        elif visual.kind == "vertex":
            kw["vertex_colors"] = np.array(visual.vertex_colors, dtype=np.uint8)
        if "vertex_normals" in tm._cache:  # loaded from the file, not derived
            kw["vertex_normals"] = np.array(tm.vertex_normals, dtype=np.float64)
        return cls(np.array(tm.vertices, dtype=np.float64), np.array(tm.faces, dtype=np.int64), **kw)

    def to_trimesh(self):
        """A ``trimesh.Trimesh`` with the same vertices (order kept), faces and visuals."""
        import trimesh

        visual = None
        if self.uv is not None:
            from PIL import Image

            image = Image.fromarray(self.texture) if self.texture is not None else None
            visual = trimesh.visual.TextureVisuals(uv=self.uv, image=image)
        elif self.vertex_colors is not None:
            visual = trimesh.visual.ColorVisuals(vertex_colors=self.vertex_colors)
        return trimesh.Trimesh(
            vertices=self.vertices, faces=self.faces, vertex_normals=self.vertex_normals,
            visual=visual, process=False,
        )

    @classmethod
    def load(cls, path, texture=None) -> "Mesh":
        """Load a mesh file (.obj, .ply, .off, .stl, .glb, ...) with trimesh.

        Vertices are not merged or reordered (``process=False``); an OBJ's
        vertices are split only where one position carries several uvs (uv
        seams), as a per-vertex ``uv`` requires.

        Args:
            path: the mesh file.
            texture: optional image file for meshes whose texture is not
                referenced by the file (an OBJ without ``mtllib``); it replaces
                any texture found through the material.
        """
        import trimesh

        m = cls.from_trimesh(trimesh.load(str(path), force="mesh", process=False))
        if texture is not None:
            from PIL import Image

            with Image.open(texture) as img:
                m.texture = _image_to_uint8(img)
            m.validate(f"{path} (texture {texture})")
        return m


@register_payload
@dataclass(eq=False)
class PointCloud(_Payload):
    """Points with optional colours and normals.

    Attributes:
        points: ``[N, 3]`` float.
        colors: optional ``[N, 3]`` uint8 RGB.
        normals: optional ``[N, 3]`` float.
    """

    points: np.ndarray
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None

    _ARRAYS: ClassVar[tuple[str, ...]] = ("points", "colors", "normals")

    def validate(self, where: str) -> None:
        d: dict[str, int] = {}
        self.points = check_array(where, "points", self.points, ("N", 3), ("f",), d)
        if self.colors is not None:
            self.colors = check_array(where, "colors", self.colors, ("N", 3), ("u1",), d)
        if self.normals is not None:
            self.normals = check_array(where, "normals", self.normals, ("N", 3), ("f",), d)

    def bound_points(self) -> np.ndarray:
        return self.points

    @property
    def num(self) -> int:
        return len(self.points)

    @classmethod
    def load(cls, path) -> "PointCloud":
        """Load points from a .ply (or any file trimesh reads; a mesh gives its vertices).

        Colours keep RGB (alpha is dropped); normals are read from PLY
        ``nx, ny, nz`` vertex properties when present.
        """
        import trimesh

        geom = trimesh.load(str(path), process=False)
        if isinstance(geom, trimesh.Scene):
            geom = geom.to_geometry() if hasattr(geom, "to_geometry") else geom.dump(concatenate=True)
        colors = None
        if isinstance(geom, trimesh.PointCloud):
            pts = geom.vertices
            if geom.colors is not None and len(geom.colors) == len(pts):
                colors = geom.colors
        else:
            pts = geom.vertices
            if geom.visual.kind == "vertex":
                colors = geom.visual.vertex_colors
        normals = None
        raw = geom.metadata.get("_ply_raw", {}).get("vertex", {}).get("data")
        names = (raw.dtype.names or ()) if hasattr(raw, "dtype") else (raw or {}).keys()  # binary / ascii PLY
        if {"nx", "ny", "nz"} <= set(names):
            normals = np.stack([raw["nx"], raw["ny"], raw["nz"]], -1).reshape(-1, 3)
        if colors is not None:
            colors = np.array(colors, dtype=np.uint8)[:, :3]
        pts = np.array(pts, dtype=np.float64)
        try:
            return cls(pts, colors, normals)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


@register_payload
@dataclass(eq=False)
class GaussianCloud(_Payload):
    """3D Gaussians as in 3D Gaussian Splatting (Kerbl et al. 2023), raw parameters.

    Attributes:
        means: ``[N, 3]`` float centres.
        quats: ``[N, 4]`` float rotations, wxyz, unnormalised (non-zero).
        log_scales: ``[N, 3]`` float, ``scales = exp(log_scales)``.
        opacity_logits: ``[N]`` float, ``opacities = sigmoid(opacity_logits)``.
        sh: ``[N, K, C]`` float spherical-harmonic coefficients, ``K = (d + 1)^2``
            for degree ``d`` in 0..3, ``C`` channels (3 for RGB); colour is
            ``SH_C0 * sh[:, 0] + 0.5`` at degree 0.
    """

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    opacity_logits: np.ndarray
    sh: np.ndarray

    _ARRAYS: ClassVar[tuple[str, ...]] = ("means", "quats", "log_scales", "opacity_logits", "sh")

    def validate(self, where: str) -> None:
        d: dict[str, int] = {}
        self.means = check_array(where, "means", self.means, ("N", 3), ("f",), d)
        self.quats = check_array(where, "quats", self.quats, ("N", 4), ("f",), d)
        self.log_scales = check_array(where, "log_scales", self.log_scales, ("N", 3), ("f",), d)
        self.opacity_logits = check_array(where, "opacity_logits", self.opacity_logits, ("N",), ("f",), d)
        self.sh = check_array(where, "sh", self.sh, ("N", (1, 4, 9, 16), "C"), ("f",), d)
        if len(self.quats) and not np.all((self.quats * self.quats).sum(-1) > 0):
            raise ValueError(f"{where}: field 'quats' has a zero quaternion (row {int(np.argmin((self.quats**2).sum(-1)))})")

    def bound_points(self) -> np.ndarray:
        return self.means

    @property
    def num(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return math.isqrt(self.sh.shape[1]) - 1

    @property
    def scales(self) -> np.ndarray:
        """``[N, 3]`` standard deviations along the Gaussian's axes."""
        return np.exp(self.log_scales)

    @property
    def opacities(self) -> np.ndarray:
        """``[N]`` opacities in (0, 1)."""
        return 1.0 / (1.0 + np.exp(-self.opacity_logits))

    def transformed(self, T) -> "GaussianCloud":
        """The same Gaussians moved by the rigid transform ``T`` ``[4, 4]`` (means and rotations)."""
        from geo.transforms import check_rigid, quat_to_rotmat, rotmat_to_quat

        T = np.asarray(T, dtype=np.float64)
        check_rigid(T, "GaussianCloud.transformed: T")
        R = T[:3, :3] @ quat_to_rotmat(np.asarray(self.quats, np.float64))
        return GaussianCloud(
            means=(np.asarray(self.means, np.float64) @ T[:3, :3].T + T[:3, 3]).astype(self.means.dtype),
            quats=rotmat_to_quat(R).astype(self.quats.dtype),
            log_scales=self.log_scales.copy(),
            opacity_logits=self.opacity_logits.copy(),
            sh=self.sh.copy(),
        )

    @classmethod
    def concat(cls, clouds: "list[GaussianCloud]") -> "GaussianCloud":
        """One cloud holding all Gaussians of ``clouds`` (same SH degree and channels)."""
        if not clouds:
            raise ValueError("GaussianCloud.concat: expected at least one cloud")
        shapes = {c.sh.shape[1:] for c in clouds}
        if len(shapes) != 1:
            raise ValueError(f"GaussianCloud.concat: clouds have different SH shapes {sorted(shapes)}")
        return cls(**{k: np.concatenate([getattr(c, k) for c in clouds]) for k in cls._ARRAYS})

    @classmethod
    def from_points(
        cls,
        points,
        colors=None,
        scale: float | None = None,
        opacity: float = 0.1,
        sh_degree: int = 3,
        dtype=np.float32,
    ) -> "GaussianCloud":
        """Isotropic Gaussians at ``points``, the usual 3DGS initialisation.

        Args:
            points: ``[N, 3]`` centres.
            colors: optional ``[N, 3]`` RGB, uint8 or float in [0, 1]; sets the
                SH DC term to ``(c - 0.5) / SH_C0``; grey (DC 0) when None.
            scale: standard deviation of every Gaussian; when None, each one gets
                the RMS distance to its 3 nearest neighbours (as in 3DGS).
            opacity: initial opacity in (0, 1).
            sh_degree: 0..3; higher coefficients start at 0.
            dtype: float dtype of all arrays.
        """
        pts = check_array("GaussianCloud.from_points", "points", points, ("N", 3), ("f", "iu"), {})
        n = len(pts)
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"GaussianCloud.from_points: sh_degree must be in 0..3, got {sh_degree}")
        if not 0 < opacity < 1:
            raise ValueError(f"GaussianCloud.from_points: opacity must be in (0, 1), got {opacity}")
        if scale is None:
            if n < 2:
                s = np.full(n, 1e-2)
            else:
                from scipy.spatial import cKDTree

                k = min(4, n)
                dist, _ = cKDTree(pts).query(pts, k=k)  # column 0 is the point itself
                s = np.sqrt(np.mean(dist[:, 1:] ** 2, axis=1))
            s = np.maximum(s, 1e-7)
        else:
            if not scale > 0:
                raise ValueError(f"GaussianCloud.from_points: scale must be > 0, got {scale}")
            s = np.full(n, float(scale))
        sh = np.zeros((n, (sh_degree + 1) ** 2, 3), dtype=dtype)
        if colors is not None:
            c = np.asarray(colors)
            c = c.astype(np.float64) / 255.0 if c.dtype == np.uint8 else c.astype(np.float64)
            c = check_array("GaussianCloud.from_points", "colors", c, (n, 3), ("f",), {})
            sh[:, 0] = (c - 0.5) / SH_C0
        quats = np.zeros((n, 4), dtype=dtype)
        quats[:, 0] = 1
        return cls(
            means=pts.astype(dtype),
            quats=quats,
            log_scales=np.repeat(np.log(s)[:, None], 3, 1).astype(dtype),
            opacity_logits=np.full(n, math.log(opacity / (1 - opacity)), dtype=dtype),
            sh=sh,
        )


@register_payload
@dataclass(eq=False)
class Camera(_Payload):
    """A camera: intrinsics plus optional images. Its pose is the node's world
    transform (camera-to-world, OpenCV axes).

    Attributes:
        model: intrinsics and distortion.
        image: optional ``[H, W, 3|4]`` uint8 or float32 (in [0, 1]).
        depth: optional ``[H, W]`` float32 z-depth, 0 where unknown.
        mask: optional ``[H, W]`` bool, True where valid.
        name: optional provenance (e.g. the image file name).
        image_path: optional path of the source image (for lazily loaded captures).
    """

    model: CameraModel
    image: np.ndarray | None = None
    depth: np.ndarray | None = None
    mask: np.ndarray | None = None
    name: str | None = None
    image_path: str | None = None

    _ARRAYS: ClassVar[tuple[str, ...]] = ("image", "depth", "mask")

    def validate(self, where: str) -> None:
        m = self.model
        if not isinstance(m, CameraModel):
            raise ValueError(f"{where}: field 'model' must be a geo.cameras.CameraModel, got {type(m).__name__}")
        if not (int(m.width) == m.width > 0 and int(m.height) == m.height > 0):
            raise ValueError(f"{where}: field 'model' has invalid size width={m.width}, height={m.height}")
        for f in ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4", "p1", "p2"):
            if not math.isfinite(getattr(m, f)):
                raise ValueError(f"{where}: field 'model.{f}' is not finite ({getattr(m, f)})")
        d = {"H": int(m.height), "W": int(m.width)}
        if self.image is not None:
            self.image = check_array(where, "image", self.image, ("H", "W", (3, 4)), ("u1", "f4"), d)
        if self.depth is not None:
            self.depth = check_array(where, "depth", self.depth, ("H", "W"), ("f4",), d)
            if np.any(self.depth < 0):
                raise ValueError(f"{where}: field 'depth' has negative values (0 marks no depth)")
        if self.mask is not None:
            self.mask = check_array(where, "mask", self.mask, ("H", "W"), ("b",), d)
        for f in ("name", "image_path"):
            if getattr(self, f) is not None and not isinstance(getattr(self, f), str):
                raise ValueError(f"{where}: field '{f}' must be a str or None")

    def bound_points(self) -> np.ndarray:
        return np.zeros((1, 3))  # the centre

    def json_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": dataclasses.asdict(self.model)}
        for f in ("name", "image_path"):
            if getattr(self, f) is not None:
                out[f] = getattr(self, f)
        return out

    @classmethod
    def _fields_from_json(cls, fields: dict, where: str) -> dict:
        extra = sorted(set(fields) - {"model", "name", "image_path"})
        if extra:
            raise ValueError(f"{where}: unexpected fields {extra} for Camera")
        if not isinstance(fields.get("model"), dict):
            raise ValueError(f"{where}: field 'model' must be a dict of CameraModel fields")
        try:
            model = CameraModel(**fields["model"])
        except TypeError as e:
            raise ValueError(f"{where}: field 'model': {e}") from None
        return {"model": model, **{k: v for k, v in fields.items() if k != "model"}}
