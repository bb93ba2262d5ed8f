"""Camera models: pinhole, OpenCV radial/tangential distortion, equidistant fisheye.

A :class:`CameraModel` holds the intrinsics and lens distortion of one camera;
its pose lives elsewhere (camera-to-world, OpenCV axes: x right, y down,
z forward; see ``docs/architecture.md``). All maths is written once, in torch,
batched over leading dimensions and differentiable with respect to its tensor
inputs, on any dtype and device.

Coordinates used below:

* camera frame: OpenCV axes, points ``[..., 3]``;
* normalised image coordinates ``(x, y) = (X / Z, Y / Z)`` before distortion
  and ``(x_d, y_d)`` after it, ``[..., 2]``;
* pixel coordinates ``(u, v) = (fx x_d + cx, fy y_d + cy)``, continuous, with
  the image's top-left corner at ``(0, 0)`` and pixel ``(row i, col j)``
  centred at ``(j + 0.5, i + 0.5)`` (COLMAP / gsplat convention).

Distortion models:

* ``"opencv"``: OpenCV's ``(k1, k2, p1, p2, k3)`` model (``cv::projectPoints``
  documentation, "Camera Calibration and 3D Reconstruction")::

      r2  = x^2 + y^2
      x_d = x (1 + k1 r2 + k2 r2^2 + k3 r2^3) + 2 p1 x y + p2 (r2 + 2 x^2)
      y_d = y (1 + k1 r2 + k2 r2^2 + k3 r2^3) + p1 (r2 + 2 y^2) + 2 p2 x y

* ``"fisheye"``: the equidistant model of Kannala & Brandt, "A Generic Camera
  Model and Calibration Method for Conventional, Wide-Angle, and Fish-Eye
  Lenses" (TPAMI 2006), Eq. 6, with the four coefficients of OpenCV's
  ``cv::fisheye``::

      theta   = angle between the ray and the optical axis
      theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)
      x_d     = (theta_d / r) x,   r = sqrt(x^2 + y^2) = tan(theta)

  Projection works from the angle itself, so points with ``Z <= 0`` project
  as long as ``theta`` stays below the model's maximum angle (see
  :attr:`CameraModel.max_angle`).

Inverse maps (:meth:`CameraModel.undistort`, :meth:`~CameraModel.unproject`,
:meth:`~CameraModel.pixel_rays`) solve the distortion equations by Newton's
method and return NaN where the model has no unique inverse; their
``return_valid`` flag returns the matching mask. Forward maps
(:meth:`~CameraModel.project`) never return NaN; they flag points the model
cannot image instead.

torch is imported inside the functions that need it so that importing this
module stays cheap (the CLI imports it through the scene payloads).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["CameraModel", "CameraKind", "opencv_to_opengl", "opengl_to_opencv", "optical_axes_system"]

CameraKind = Literal["pinhole", "opencv", "fisheye"]

_MODELS = ("pinhole", "opencv", "fisheye")
_COEFFS = ("k1", "k2", "k3", "k4", "p1", "p2")
# Coefficients each model reads; the others must stay 0 so that a camera has
# one representation (and a pinhole camera is really undistorted).
_USED_COEFFS = {
    "pinhole": (),
    "opencv": ("k1", "k2", "k3", "p1", "p2"),
    "fisheye": ("k1", "k2", "k3", "k4"),
}
_REQUIRED_KEYS = ("width", "height", "fx", "fy", "cx", "cy")

# Right-multiplying a camera-to-world pose by this flips the camera's y and z
# axes (OpenCV x right/y down/z forward <-> OpenGL x right/y up/z back).
_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
_AXIS_FLIP = (1.0, -1.0, -1.0, 1.0)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _as_float_tensor(x: Any, name: str, last_dim: int | None):
    """Tensor view of ``x`` (numpy and lists are converted) with a floating dtype.

    Checks that the last dimension is ``last_dim`` when given.
    """
    import torch

    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if last_dim is not None and (t.ndim == 0 or t.shape[-1] != last_dim):
        raise ValueError(f"{name}: expected shape [..., {last_dim}], got {tuple(t.shape)}")
    return t


def _safe_div(num, den, ok, fallback):
    """``num / den`` where ``ok``, else ``fallback``, with finite gradients everywhere.

    The denominator is replaced before dividing (the "double where" trick) so
    that masked-out entries contribute neither NaN values nor NaN gradients.
    """
    import torch

    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), fallback)


def _nan_where_invalid(x, valid):
    """``x [..., k]`` with NaN where ``valid [...]`` is False (zero gradient there)."""
    import torch

    return torch.where(valid[..., None], x, torch.full_like(x, math.nan))


def _safe_sqrt(x):
    """``sqrt(x)`` with a zero (not infinite) gradient at ``x == 0``."""
    import torch

    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics and lens distortion of one camera (no pose).

    Attributes:
        width, height: image size in pixels.
        fx, fy, cx, cy: pinhole intrinsics in pixels; the image's top-left
            corner is (0, 0) and pixel (i, j) has its centre at (j + .5, i + .5).
        model: ``"pinhole"`` (no distortion), ``"opencv"`` (radial k1, k2, k3
            and tangential p1, p2, as OpenCV's ``(k1, k2, p1, p2, k3)``), or
            ``"fisheye"`` (equidistant, OpenCV fisheye k1..k4).
        k1, k2, k3, k4, p1, p2: distortion coefficients; unused ones are 0.
            A pinhole camera has all of them 0, an ``"opencv"`` camera has
            ``k4 == 0`` and a ``"fisheye"`` camera has ``p1 == p2 == 0``.

    Fields are validated (and normalised to ``int``/``float``) on
    construction; a bad field raises ``ValueError`` naming it.

    Tensor methods take torch tensors (numpy arrays and lists are converted
    with ``torch.as_tensor``, so the result is a tensor) of any floating
    dtype and device, batched over leading dimensions ``...``, and are
    differentiable with respect to those tensors.

    Example:
        >>> cam = CameraModel(640, 480, 500.0, 500.0, 320.0, 240.0)
        >>> uv, depth = cam.project(torch.tensor([[0.0, 0.0, 2.0]]))
        >>> uv
        tensor([[320., 240.]])
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    model: CameraKind = "pinhole"
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    k4: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    # ------------------------------------------------------------------ checks

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            ok = isinstance(v, numbers.Integral) or (isinstance(v, numbers.Real) and float(v).is_integer())
            if isinstance(v, bool) or not ok or int(v) <= 0:
                raise ValueError(f"CameraModel.{name}: expected a positive integer number of pixels, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("fx", "fy", "cx", "cy", *_COEFFS):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
                raise ValueError(f"CameraModel.{name}: expected a finite real number, got {v!r}")
            object.__setattr__(self, name, float(v))
        for name in ("fx", "fy"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CameraModel.{name}: expected a positive focal length in pixels, got {getattr(self, name)!r}")
        if self.model not in _MODELS:
            raise ValueError(f"CameraModel.model: expected one of {_MODELS}, got {self.model!r}")
        used = _USED_COEFFS[self.model]
        for name in _COEFFS:
            if name not in used and getattr(self, name) != 0.0:
                raise ValueError(
                    f"CameraModel.{name}: the {self.model!r} model does not use {name} (it uses "
                    f"{', '.join(used) if used else 'no distortion coefficients'}); expected 0, got {getattr(self, name)!r}"
                )

    # ------------------------------------------------------------ construction

    @classmethod
    def from_K(cls, K, width: int, height: int, model: CameraKind = "pinhole", **distortion: float) -> CameraModel:
        """Camera from a ``3 x 3`` intrinsic matrix (numpy, torch or nested lists).

        Args:
            K: ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; skew must be 0.
            width, height: image size in pixels.
            model: ``"pinhole"``, ``"opencv"`` or ``"fisheye"``.
            **distortion: coefficients among ``k1, k2, k3, k4, p1, p2``.

        Raises:
            ValueError: ``K`` is not of that form, or an unknown coefficient is given.
        """
        A = np.asarray(K.detach().cpu() if _is_torch(K) else K, dtype=np.float64)
        if A.shape != (3, 3):
            raise ValueError(f"K: expected shape (3, 3), got {A.shape}")
        if not np.allclose([A[0, 1], A[1, 0], A[2, 0], A[2, 1], A[2, 2]], [0, 0, 0, 0, 1], rtol=0, atol=1e-9):
            raise ValueError(
                "K: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (zero skew, last row [0, 0, 1]), "
                f"got {A.tolist()}"
            )
        unknown = sorted(set(distortion) - set(_COEFFS))
        if unknown:
            raise ValueError(f"from_K: unknown distortion coefficient(s) {unknown}; expected some of {_COEFFS}")
        return cls(width, height, A[0, 0], A[1, 1], A[0, 2], A[1, 2], model, **distortion)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field; :meth:`from_dict` inverts it exactly."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CameraModel:
        """Inverse of :meth:`to_dict`. Missing coefficients default to 0.

        Raises:
            ValueError: naming unknown or missing keys, or a bad field value.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"CameraModel.from_dict: unknown key(s) {unknown}; expected keys among {sorted(names)}")
        missing = [k for k in _REQUIRED_KEYS if k not in d]
        if missing:
            raise ValueError(f"CameraModel.from_dict: missing required key(s) {missing}")
        return cls(**d)

    # ------------------------------------------------------------- intrinsics

    def K(self, dtype=None, device=None) -> torch.Tensor:
        """Intrinsic matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.

        Args:
            dtype: torch dtype (default ``torch.float32``).
            device: torch device (default CPU).

        Returns:
            ``[3, 3]`` tensor.
        """
        import torch

        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
            dtype=dtype or torch.float32,
            device=device,
        )

    @property
    def has_distortion(self) -> bool:
        """True when some distortion coefficient is non-zero."""
        return any(getattr(self, name) != 0.0 for name in _COEFFS)

    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians, pinhole definition ``2 atan(W / (2 fx))``.

        Ignores distortion and assumes a centred principal point.
        """
        return 2.0 * math.atan(self.width / (2.0 * self.fx))

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians, pinhole definition ``2 atan(H / (2 fy))``."""
        return 2.0 * math.atan(self.height / (2.0 * self.fy))

    @property
    def max_angle(self) -> float:
        """Largest angle to the optical axis (radians) the camera model can image.

        ``pi / 2`` for pinhole and OpenCV cameras. For the fisheye it is the
        first angle in ``(0, pi]`` where ``theta_d(theta)`` stops increasing
        (beyond it two angles share a pixel), or ``pi``.
        """
        if self.model != "fisheye":
            return math.pi / 2
        # d theta_d / d theta = 1 + 3 k1 t + 5 k2 t^2 + 7 k3 t^3 + 9 k4 t^4 with t = theta^2
        roots = np.roots([9 * self.k4, 7 * self.k3, 5 * self.k2, 3 * self.k1, 1.0])
        t = [r.real for r in roots if abs(r.imag) < 1e-12 and r.real > 0]
        return min([math.pi] + [math.sqrt(x) for x in t])

    # ------------------------------------------------------------- distortion

    def _radial_tangential(self, x, y):
        """OpenCV distortion of normalised coordinates (see module docstring)."""
        r2 = x * x + y * y
        radial = 1 + r2 * (self.k1 + r2 * (self.k2 + r2 * self.k3))
        xd = x * radial + 2 * self.p1 * x * y + self.p2 * (r2 + 2 * x * x)
        yd = y * radial + self.p1 * (r2 + 2 * y * y) + 2 * self.p2 * x * y
        return xd, yd

    def _radial_tangential_with_jacobian(self, x, y):
        """``(x_d, y_d, a, b, d)``: the OpenCV distortion and its symmetric Jacobian ``[[a, b], [b, d]]``.

        With ``rho = 1 + k1 r2 + k2 r2^2 + k3 r2^3`` and ``rho' = d rho / d r2``:
        ``a = rho + 2 x^2 rho' + 2 p1 y + 6 p2 x``, ``b = 2 x y rho' + 2 p1 x + 2 p2 y``,
        ``d = rho + 2 y^2 rho' + 6 p1 y + 2 p2 x``.
        """
        r2 = x * x + y * y
        radial = 1 + r2 * (self.k1 + r2 * (self.k2 + r2 * self.k3))
        dradial = self.k1 + r2 * (2 * self.k2 + 3 * self.k3 * r2)
        xy = x * y
        xd = x * radial + 2 * self.p1 * xy + self.p2 * (r2 + 2 * x * x)
        yd = y * radial + self.p1 * (r2 + 2 * y * y) + 2 * self.p2 * xy
        a = radial + 2 * x * x * dradial + 2 * self.p1 * y + 6 * self.p2 * x
        b = 2 * xy * dradial + 2 * self.p1 * x + 2 * self.p2 * y
        d = radial + 2 * y * y * dradial + 6 * self.p1 * y + 2 * self.p2 * x
        return xd, yd, a, b, d

    def _radially_monotone(self, r2):
        """Where ``r_d = r (1 + k1 r^2 + ...)`` still increases with ``r``.

        Past that radius the OpenCV polynomial folds back and points far
        outside the field of view land inside the image; they are flagged.
        """
        radial = 1 + r2 * (self.k1 + r2 * (self.k2 + r2 * self.k3))
        dradial = self.k1 + r2 * (2 * self.k2 + 3 * self.k3 * r2)
        return radial + 2 * r2 * dradial > 0

    def _theta_d(self, theta):
        """Kannala-Brandt polynomial ``theta (1 + k1 theta^2 + ... + k4 theta^8)``."""
        t2 = theta * theta
        return theta * (1 + t2 * (self.k1 + t2 * (self.k2 + t2 * (self.k3 + t2 * self.k4))))

    def _theta_d_prime(self, theta):
        t2 = theta * theta
        return 1 + t2 * (3 * self.k1 + t2 * (5 * self.k2 + t2 * (7 * self.k3 + t2 * 9 * self.k4)))

    def distort(self, xy) -> torch.Tensor:
        """Apply lens distortion to normalised image coordinates.

        Args:
            xy: ``[..., 2]`` undistorted normalised coordinates ``(X/Z, Y/Z)``.

        Returns:
            ``[..., 2]`` distorted normalised coordinates ``(x_d, y_d)``, so that
            pixels are ``(fx x_d + cx, fy y_d + cy)``. Identity for pinhole.
            For the fisheye, ``theta = atan(r) < pi / 2``: use :meth:`project`
            for points at or behind the image plane.
        """
        import torch

        xy = _as_float_tensor(xy, "xy", 2)
        x, y = xy[..., 0], xy[..., 1]
        if self.model == "pinhole":
            return xy
        if self.model == "opencv":
            return torch.stack(self._radial_tangential(x, y), -1)
        r = _safe_sqrt(x * x + y * y)
        theta = torch.atan(r)
        # theta_d / r -> 1 as r -> 0 (theta ~ r)
        scale = _safe_div(self._theta_d(theta), r, r > 0, torch.ones_like(r))
        return xy * scale[..., None]

    def undistort(self, xy_distorted, *, max_iter: int = 20) -> torch.Tensor:
        """Invert :meth:`distort` by Newton's method.

        OpenCV model: 2D Newton with the analytic Jacobian, started at the
        distorted point. Fisheye: 1D Newton on ``theta`` for
        ``theta_d(theta) = |x_d|``, safeguarded by bisection on
        ``[0, max_angle]``, then ``x = x_d tan(theta) / |x_d|``. Iterations stop
        early once every step is below ``sqrt(eps)`` of the dtype, then one more
        (quadratic convergence) step is taken; gradients follow the implicit
        function theorem through that last step.

        Args:
            xy_distorted: ``[..., 2]`` distorted normalised coordinates.
            max_iter: maximum number of Newton iterations.

        Returns:
            ``[..., 2]`` undistorted normalised coordinates; NaN where the
            model has no unique inverse (OpenCV: Newton did not converge or
            the distortion folds over; fisheye: ``theta >= pi / 2``, i.e. a ray
            at or behind the image plane, or beyond :attr:`max_angle`).
        """
        xy, valid = self._undistort(_as_float_tensor(xy_distorted, "xy_distorted", 2), max_iter)
        return _nan_where_invalid(xy, valid)

    # The private solvers return finite placeholders (0) where not valid, so that
    # gradients stay finite through every expression built on them; the public
    # methods put NaN in at the very end.

    def _undistort(self, xyd, max_iter: int):
        """``(xy [..., 2], valid [...])``; ``xy`` is 0 where not valid."""
        import torch

        if self.model == "pinhole":
            return xyd, torch.ones(xyd.shape[:-1], dtype=torch.bool, device=xyd.device)
        if self.model == "opencv":
            return self._undistort_opencv(xyd, max_iter)
        xd, yd = xyd[..., 0], xyd[..., 1]
        rd = _safe_sqrt(xd * xd + yd * yd)
        theta, valid = self._fisheye_theta(rd, max_iter)
        valid = valid & (theta < math.pi / 2)
        theta = torch.where(valid, theta, torch.zeros_like(theta))
        # tan(theta) / theta_d -> 1 as theta_d -> 0
        scale = _safe_div(torch.tan(theta), rd, rd > 0, torch.ones_like(rd))
        return torch.where(valid[..., None], xyd * scale[..., None], torch.zeros_like(xyd)), valid

    def _undistort_opencv(self, xyd, max_iter: int):
        import torch

        eps = torch.finfo(xyd.dtype).eps
        tiny = torch.finfo(xyd.dtype).tiny
        tol = math.sqrt(eps)

        def newton_step(x, y, xd, yd):
            """One Newton step on f(x, y) = (x_d, y_d); also returns the residual and det J at (x, y)."""
            fx_, fy_, a, b, d = self._radial_tangential_with_jacobian(x, y)
            ex, ey = fx_ - xd, fy_ - yd
            det = a * d - b * b
            ok = det.abs() > tiny
            zero = torch.zeros_like(det)
            dx = _safe_div(d * ex - b * ey, det, ok, zero)
            dy = _safe_div(a * ey - b * ex, det, ok, zero)
            return x - dx, y - dy, dx, dy, torch.maximum(ex.abs(), ey.abs()), det

        xd, yd = xyd[..., 0], xyd[..., 1]
        with torch.no_grad():
            tx, ty = xd.detach().reshape(-1), yd.detach().reshape(-1)
            x, y = tx.clone(), ty.clone()
            # iterate only on the points not yet converged: most take 3-4 steps, a few many more
            active = torch.arange(tx.numel(), device=tx.device)
            for _ in range(max_iter):
                xa, ya, dx, dy, _, _ = newton_step(x[active], y[active], tx[active], ty[active])
                x[active], y[active] = xa, ya
                step = torch.maximum(dx.abs(), dy.abs())
                # diverged (non-finite) points are flagged below; they must not hold up the rest
                done = (step <= tol * (1 + torch.maximum(xa.abs(), ya.abs()))) | ~torch.isfinite(step)
                active = active[~done]
                if active.numel() == 0:
                    break
            # restart diverged points from x_d so that the step below stays finite (they are flagged)
            finite = torch.isfinite(x) & torch.isfinite(y)
            x, y = torch.where(finite, x, tx).reshape(xd.shape), torch.where(finite, y, ty).reshape(yd.shape)
        # One more step with gradients on: at the root it adds J^-1 (x_d - f(x*)) ~ 0 to the
        # value, and its derivative is J^-1 d(x_d)/d(.), the implicit-function-theorem gradient.
        x, y, _, _, res, det = newton_step(x, y, xd, yd)
        with torch.no_grad():
            valid = (res <= tol * (1 + torch.maximum(xd.abs(), yd.abs()))) & (det > 0)
            valid &= self._radially_monotone(x * x + y * y) & torch.isfinite(x) & torch.isfinite(y)
        xy = torch.stack([x, y], -1)
        return torch.where(valid[..., None], xy, torch.zeros_like(xy)), valid

    def _fisheye_theta(self, theta_d, max_iter: int):
        """Solve ``theta_d(theta) = theta_d`` for ``theta`` in ``[0, max_angle]``.

        Returns ``(theta, valid)``; ``theta`` is 0 where ``theta_d`` exceeds
        the model's range. ``theta_d(theta)`` is increasing on the bracket, so
        Newton steps that leave the current bracket fall back to bisection.
        """
        import torch

        eps = torch.finfo(theta_d.dtype).eps
        tmax = self.max_angle
        with torch.no_grad():
            target = theta_d.detach()
            in_range = target <= self._theta_d(tmax)
            lo = torch.zeros_like(target)
            hi = torch.full_like(target, tmax)
            theta = target.clamp(0, tmax)
            for _ in range(max_iter):
                g = self._theta_d(theta) - target
                lo = torch.where(g < 0, theta, lo)
                hi = torch.where(g > 0, theta, hi)
                newton = theta - g / self._theta_d_prime(theta).clamp_min(eps)
                inside = (newton >= lo) & (newton <= hi)
                new = torch.where(inside, newton, (lo + hi) / 2)
                step = (new - theta).abs()
                theta = new
                if bool((step[in_range] <= math.sqrt(eps) * (1 + theta[in_range])).all()):
                    break
            theta = torch.where(in_range, theta, torch.zeros_like(theta))
        # implicit-function-theorem step, as in _undistort_opencv
        dprime = self._theta_d_prime(theta)
        theta = theta - (self._theta_d(theta) - theta_d) / torch.where(in_range, dprime, torch.ones_like(dprime))
        with torch.no_grad():
            valid = in_range & ((self._theta_d(theta) - target).abs() <= math.sqrt(eps) * (1 + target))
        return torch.where(valid, theta, torch.zeros_like(theta)), valid

    # -------------------------------------------------------------- projection

    def project(self, points_cam, return_valid: bool = False):
        """Project camera-frame points to pixels (with distortion).

        Args:
            points_cam: ``[..., 3]`` points in the camera frame (OpenCV axes).
            return_valid: also return the validity mask.

        Returns:
            ``(uv, depth)`` or ``(uv, depth, valid)``:

            * ``uv``: ``[..., 2]`` pixel coordinates; never NaN. Where
              ``valid`` is False it is the principal point ``(cx, cy)``
              (with zero gradient): a placeholder, not a projection.
            * ``depth``: ``[...]`` z-depth ``Z`` (may be negative for the fisheye).
            * ``valid``: ``[...]`` bool, True where the model images the
              point at a unique pixel. Pinhole/OpenCV: ``Z > 0`` and (OpenCV)
              the radial distortion is still increasing at that radius.
              Fisheye: the angle to the optical axis is below
              :attr:`max_angle` (so points with ``Z <= 0`` are valid for a
              lens wider than 180 degrees). Valid does not mean inside the
              image.
        """
        import torch

        p = _as_float_tensor(points_cam, "points_cam", 3)
        X, Y, Z = p[..., 0], p[..., 1], p[..., 2]
        zero = torch.zeros_like(Z)
        finite = torch.isfinite(p).all(-1)
        if self.model == "fisheye":
            rho2 = X * X + Y * Y
            rho = _safe_sqrt(rho2)
            nonzero = (rho2 > 0) | (Z != 0)
            theta = torch.atan2(rho, torch.where(nonzero, Z, torch.ones_like(Z)))
            valid = finite & nonzero & (theta < self.max_angle)
            # theta_d / rho is the radial scale; on the axis it tends to 1 / Z
            scale = torch.where(rho2 > 0, _safe_div(self._theta_d(theta), rho, rho2 > 0, zero), _safe_div(1.0, Z, Z > 0, zero))
            xd, yd = X * scale, Y * scale
        else:
            front = Z > 0
            x, y = _safe_div(X, Z, front, zero), _safe_div(Y, Z, front, zero)
            valid = finite & front & torch.isfinite(x) & torch.isfinite(y)
            if self.model == "opencv":
                valid = valid & self._radially_monotone(x * x + y * y)
                # zero the invalid inputs before the polynomial so it cannot overflow to inf / NaN
                x, y = torch.where(valid, x, zero), torch.where(valid, y, zero)
                xd, yd = self._radial_tangential(x, y)
            else:
                xd, yd = x, y
        xd, yd = torch.where(valid, xd, zero), torch.where(valid, yd, zero)
        uv = torch.stack([self.fx * xd + self.cx, self.fy * yd + self.cy], -1)
        return (uv, Z, valid) if return_valid else (uv, Z)

    def pixel_rays(self, uv, return_valid: bool = False, *, max_iter: int = 20):
        """Unit viewing directions, in the camera frame, of pixel coordinates.

        Args:
            uv: ``[..., 2]`` pixel coordinates (pixel centres at ``j + 0.5, i + 0.5``).
            return_valid: also return the validity mask.
            max_iter: Newton iterations for undistortion.

        Returns:
            ``dirs`` ``[..., 3]`` unit vectors (OpenCV axes), or ``(dirs, valid)``.
            NaN where the model has no unique inverse (see :meth:`undistort`);
            fisheye rays may point sideways or backwards up to :attr:`max_angle`.
        """
        import torch

        uv = _as_float_tensor(uv, "uv", 2)
        xyd = self._pixel_to_normalised(uv)
        if self.model == "fisheye":
            xd, yd = xyd[..., 0], xyd[..., 1]
            rd = _safe_sqrt(xd * xd + yd * yd)
            theta, valid = self._fisheye_theta(rd, max_iter)
            # sin(theta) / theta_d -> 1 as theta_d -> 0
            s = _safe_div(torch.sin(theta), rd, rd > 0, torch.ones_like(rd))
            dirs = torch.stack([xd * s, yd * s, torch.cos(theta)], -1)
        else:
            xy, valid = self._undistort(xyd, max_iter)
            dirs = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)
            dirs = dirs / torch.linalg.norm(dirs, dim=-1, keepdim=True)
        dirs = _nan_where_invalid(dirs, valid)
        return (dirs, valid) if return_valid else dirs

    def unproject(self, uv, depth, return_valid: bool = False, *, max_iter: int = 20):
        """Lift pixels with z-depth to camera-frame points; inverse of :meth:`project`.

        Args:
            uv: ``[..., 2]`` pixel coordinates.
            depth: ``[...]`` z-depth (distance along the optical axis), as in
                the project's depth maps. For the fisheye too: a ray at or
                behind the image plane (``theta >= pi / 2``) has no positive
                z-depth and gives NaN; scale :meth:`pixel_rays` by a distance
                along the ray for those.
            return_valid: also return the validity mask.
            max_iter: Newton iterations for undistortion.

        Returns:
            ``[..., 3]`` points (OpenCV axes), or ``(points, valid)``; NaN where
            not valid.
        """
        import torch

        uv = _as_float_tensor(uv, "uv", 2)
        depth = _as_float_tensor(depth, "depth", None)
        if depth.shape != uv.shape[:-1]:
            raise ValueError(f"depth: expected shape {tuple(uv.shape[:-1])} (uv's batch shape), got {tuple(depth.shape)}")
        # both branches lift (x, y) = tan(theta) (x_d, y_d) / |x_d| to (x z, y z, z)
        xy, valid = self._undistort(self._pixel_to_normalised(uv), max_iter)
        pts = _nan_where_invalid(torch.cat([xy * depth[..., None], depth[..., None]], -1), valid)
        return (pts, valid) if return_valid else pts

    def _pixel_to_normalised(self, uv):
        import torch

        return torch.stack([(uv[..., 0] - self.cx) / self.fx, (uv[..., 1] - self.cy) / self.fy], -1)

    def rays(self, c2w=None, *, dtype=None, device=None):
        """One ray per pixel centre ``(u, v) = (j + 0.5, i + 0.5)``.

        Args:
            c2w: optional camera-to-world pose ``[..., 4, 4]`` (numpy or torch,
                OpenCV axes, rigid); without it rays are in the camera frame.
            dtype: torch dtype (default: ``c2w``'s if it is a floating tensor,
                else ``torch.float32``).
            device: torch device (default: ``c2w``'s if it is a tensor, else CPU).

        Returns:
            ``(origins, directions)``, each ``[..., H, W, 3]`` (``[H, W, 3]``
            without a batched pose); directions have unit length and are NaN
            where :meth:`pixel_rays` is.
        """
        import torch

        if isinstance(c2w, torch.Tensor):
            device = c2w.device if device is None else device
            dtype = dtype or (c2w.dtype if c2w.is_floating_point() else None)
        dtype = dtype or torch.float32
        v, u = torch.meshgrid(
            torch.arange(self.height, dtype=dtype, device=device) + 0.5,
            torch.arange(self.width, dtype=dtype, device=device) + 0.5,
            indexing="ij",
        )
        dirs = self.pixel_rays(torch.stack([u, v], -1))
        if c2w is None:
            return torch.zeros_like(dirs), dirs
        # a tensor pose keeps its autograd graph (pose optimisation)
        T = c2w if isinstance(c2w, torch.Tensor) else torch.as_tensor(np.asarray(c2w))
        _check_pose_shape(T)
        T = T.to(dtype=dtype, device=device)
        R, t = T[..., None, None, :3, :3], T[..., None, None, :3, 3]
        dirs_w = (R @ dirs[..., None])[..., 0]
        return t.expand(dirs_w.shape), dirs_w

    # ----------------------------------------------------------------- resize

    def resize(self, scale: float | None = None, *, width: int | None = None, height: int | None = None) -> CameraModel:
        """The same camera for an image resampled to a new size.

        Give either ``scale`` (new size ``round(W * scale) x round(H * scale)``)
        or ``width`` and/or ``height`` (a missing one keeps the aspect ratio).
        Under the pixel-corner convention resampling the whole image maps
        ``u -> u W'/W`` exactly, so ``fx, cx`` scale by ``W'/W`` and ``fy, cy``
        by ``H'/H`` (the realised ratios, not ``scale``, so that the camera
        matches the rounded size). Distortion coefficients act on normalised
        coordinates and are unchanged.

        Returns:
            A new :class:`CameraModel`.
        """
        if scale is not None and (width is not None or height is not None):
            raise ValueError("resize: give either scale or width/height, not both")
        if scale is not None:
            if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
                raise ValueError(f"resize: scale must be a positive finite number, got {scale!r}")
            W, H = _round_half_up(self.width * scale), _round_half_up(self.height * scale)
        elif width is not None or height is not None:
            W = width if width is not None else _round_half_up(self.width * height / self.height)
            H = height if height is not None else _round_half_up(self.height * width / self.width)
        else:
            raise ValueError("resize: give scale, or width and/or height")
        if W < 1 or H < 1:
            raise ValueError(f"resize: the new size {W}x{H} is empty")
        sx, sy = W / self.width, H / self.height
        return replace(self, width=W, height=H, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy)

    def downscale(self, factor: int) -> CameraModel:
        """The camera of an image downsampled by an integer ``factor``.

        The new size is ``(W // factor, H // factor)`` and the image is assumed
        resampled as a whole to that size (as ``cv2.resize`` or PIL do), i.e.
        ``resize(width=W // factor, height=H // factor)``.
        """
        if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor < 1:
            raise ValueError(f"downscale: factor must be a positive integer, got {factor!r}")
        return self.resize(width=self.width // factor, height=self.height // factor)

    # ------------------------------------------------------------ undistortion

    def undistorted(self, balance: float = 0.0) -> CameraModel:
        """The ideal pinhole camera, same size, that :meth:`undistort_image` resamples to.

        ``balance = 0`` keeps ``fx, fy, cx, cy``. ``balance = 1`` lowers the
        focal lengths (keeping the principal point) until the undistorted
        image border of this camera fits in the image, so no source pixel
        is lost; values in between interpolate the focal lengths linearly.
        Border points outside the model (e.g. fisheye rays beyond 90
        degrees) are ignored.
        """
        if not (0.0 <= balance <= 1.0):
            raise ValueError(f"balance: expected a number in [0, 1], got {balance!r}")
        pinhole = replace(self, model="pinhole", **{name: 0.0 for name in _COEFFS})
        if balance == 0.0 or not self.has_distortion:
            return pinhole
        import torch

        # the source image's border, sampled densely enough to catch its extreme points
        W, H = self.width, self.height
        us = torch.linspace(0, W, 257, dtype=torch.float64)
        vs = torch.linspace(0, H, 257, dtype=torch.float64)
        border = torch.cat([
            torch.stack([us, torch.zeros_like(us)], -1), torch.stack([us, torch.full_like(us, H)], -1),
            torch.stack([torch.zeros_like(vs), vs], -1), torch.stack([torch.full_like(vs, W), vs], -1),
        ])
        xy, valid = self._undistort(self._pixel_to_normalised(border), 50)
        xy = xy[valid]
        fx_all, fy_all = self.fx, self.fy
        # fx such that cx + fx x stays within [0, W] for every border point
        for x in xy[:, 0].tolist():
            if x < 0:
                fx_all = min(fx_all, self.cx / -x)
            elif x > 0:
                fx_all = min(fx_all, (W - self.cx) / x)
        for y in xy[:, 1].tolist():
            if y < 0:
                fy_all = min(fy_all, self.cy / -y)
            elif y > 0:
                fy_all = min(fy_all, (H - self.cy) / y)
        return replace(pinhole, fx=self.fx + balance * (fx_all - self.fx), fy=self.fy + balance * (fy_all - self.fy))

    def undistort_points(self, uv, *, target: CameraModel | None = None, max_iter: int = 20) -> torch.Tensor:
        """Map pixels of this (distorted) camera to pixels of an ideal pinhole camera.

        Args:
            uv: ``[..., 2]`` pixel coordinates in this camera.
            target: pinhole camera to map into (default: :meth:`undistorted`,
                i.e. this camera's ``K`` without distortion).
            max_iter: Newton iterations.

        Returns:
            ``[..., 2]`` pixel coordinates in ``target``; NaN where
            :meth:`undistort` is.
        """
        import torch

        target = self.undistorted() if target is None else target
        if target.model != "pinhole":
            raise ValueError(f"target: expected a pinhole camera, got model {target.model!r}")
        xy, valid = self._undistort(self._pixel_to_normalised(_as_float_tensor(uv, "uv", 2)), max_iter)
        uv_out = torch.stack([target.fx * xy[..., 0] + target.cx, target.fy * xy[..., 1] + target.cy], -1)
        return _nan_where_invalid(uv_out, valid)

    def undistort_image(self, image, *, interpolation: str = "bilinear", balance: float = 0.0):
        """Resample an image of this camera to an ideal pinhole camera of the same size.

        For each output pixel centre the pinhole ``K`` gives normalised
        coordinates, :meth:`distort` moves them to where this lens imaged
        them, and ``grid_sample`` reads the source there (``align_corners=False``
        puts -1/+1 at the image's outer pixel corners, matching the
        pixel-corner convention). Output pixels whose source lies outside
        the image, or outside the model, are 0.

        Args:
            image: numpy ``[H, W]`` or ``[H, W, C]`` (uint8 or float), or torch
                ``[C, H, W]`` or ``[B, C, H, W]``.
            interpolation: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
            balance: see :meth:`undistorted`; 0 keeps ``fx, fy, cx, cy``.

        Returns:
            ``(image_out, camera)``: the image in the input's type, layout and
            dtype (uint8 is rounded and clipped), and the pinhole
            :class:`CameraModel` it is seen with.
        """
        import torch
        import torch.nn.functional as F

        if interpolation not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(f"interpolation: expected 'bilinear', 'nearest' or 'bicubic', got {interpolation!r}")
        is_numpy = not isinstance(image, torch.Tensor)
        if is_numpy:
            arr = np.asarray(image)
            if arr.ndim not in (2, 3):
                raise ValueError(f"image: expected a numpy array [H, W] or [H, W, C], got shape {arr.shape}")
            hw = arr.shape[:2]
            x = torch.from_numpy(np.ascontiguousarray(arr.reshape(*hw, -1))).permute(2, 0, 1)[None]
        else:
            if image.ndim not in (3, 4):
                raise ValueError(f"image: expected a tensor [C, H, W] or [B, C, H, W], got shape {tuple(image.shape)}")
            hw = tuple(image.shape[-2:])
            x = image if image.ndim == 4 else image[None]
        if hw != (self.height, self.width):
            raise ValueError(f"image: expected height x width {self.height} x {self.width} (the camera's), got {hw[0]} x {hw[1]}")
        src_dtype = x.dtype
        work_dtype = src_dtype if src_dtype.is_floating_point else torch.float32
        target = self.undistorted(balance)

        # sampling map: output pixel centre -> pinhole normalised -> distorted -> source pixel
        v, u = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float64, device=x.device) + 0.5,
            torch.arange(self.width, dtype=torch.float64, device=x.device) + 0.5,
            indexing="ij",
        )
        xy = torch.stack([(u - target.cx) / target.fx, (v - target.cy) / target.fy], -1)
        inside = torch.ones_like(u, dtype=torch.bool)
        if self.model == "opencv":
            # past the fold of the polynomial the map would re-enter the image from outside
            inside = self._radially_monotone((xy * xy).sum(-1))
        src = self.distort(xy)
        grid = torch.stack([src[..., 0] * self.fx + self.cx, src[..., 1] * self.fy + self.cy], -1)
        size = torch.tensor([self.width, self.height], dtype=torch.float64, device=x.device)
        grid = 2 * grid / size - 1
        grid = torch.where(inside[..., None], grid, torch.full_like(grid, -4.0))  # -4: far outside, reads 0
        grid = grid.to(work_dtype).expand(x.shape[0], -1, -1, -1)
        out = F.grid_sample(x.to(work_dtype), grid, mode=interpolation, padding_mode="zeros", align_corners=False)

        if not src_dtype.is_floating_point:
            info = torch.iinfo(src_dtype)
            out = out.round().clamp(info.min, info.max)
        out = out.to(src_dtype)
        if is_numpy:
            out = out[0].permute(1, 2, 0).numpy().reshape(np.asarray(image).shape)
        elif image.ndim == 3:
            out = out[0]
        return out, target


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _check_pose_shape(c2w) -> None:
    if c2w.ndim < 2 or tuple(c2w.shape[-2:]) != (4, 4):
        raise ValueError(f"c2w: expected shape [..., 4, 4], got {tuple(c2w.shape)}")


def optical_axes_system(c2ws) -> tuple[np.ndarray, np.ndarray]:
    """Normal equations ``A p = b`` of the point ``p`` nearest, in least squares, to every
    camera's optical axis (OpenCV: the axis is ``+z`` of each camera-to-world ``[4, 4]``).

    ``A = Σ (I − d dᵀ)``, ``b = Σ (I − d dᵀ) c`` over camera centres ``c`` and unit axes
    ``d``; ``A`` is singular when all axes are parallel (check its condition number).
    """
    T = np.asarray(c2ws, dtype=np.float64).reshape(-1, 4, 4)
    c = T[:, :3, 3]
    d = T[:, :3, 2] / np.linalg.norm(T[:, :3, 2], axis=1, keepdims=True)
    P = np.eye(3) - d[:, :, None] * d[:, None, :]
    return P.sum(0), np.einsum("nij,nj->i", P, c)


def opencv_to_opengl(c2w):
    """Camera-to-world pose with OpenCV axes -> OpenGL/Blender axes (x right, y up, z back).

    Right-multiplies by ``diag(1, -1, -1, 1)``, i.e. negates the camera's y and
    z axis columns; the camera centre (last column) is unchanged.

    Args:
        c2w: ``[..., 4, 4]`` numpy array or torch tensor.

    Returns:
        The same kind, dtype and device as ``c2w`` (integer numpy arrays
        become float64).
    """
    if _is_torch(c2w):
        import torch

        _check_pose_shape(c2w)
        return c2w * torch.tensor(_AXIS_FLIP, dtype=c2w.dtype, device=c2w.device)
    A = np.asarray(c2w)
    _check_pose_shape(A)
    if not np.issubdtype(A.dtype, np.floating):
        A = A.astype(np.float64)
    return A * np.asarray(_AXIS_FLIP, dtype=A.dtype)


def opengl_to_opencv(c2w):
    """Camera-to-world pose with OpenGL/Blender axes -> OpenCV axes. Same flip; it is an involution."""
    return opencv_to_opengl(c2w)
