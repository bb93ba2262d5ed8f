"""`geo view`: a live viser viewer of a scene graph.

Every scene-graph node becomes a viser frame at the same path (under
``/scene``) with its local transform, so viser composes the hierarchy exactly
as the graph does; each payload hangs below its node's frame:

* ``GaussianCloud``: viser's Gaussian splats (3D covariances ``R S S^T R^T``,
  DC colour, sigmoid opacity);
* ``Mesh``: through trimesh (texture or vertex colours), or flat grey;
* ``PointCloud``: points (colours when present);
* ``Camera``: a frustum (OpenCV axes, as viser's) showing the camera's image;
* ``VoxelGrid``: voxels with positive raw density, as points or as a box mesh.

A GUI folder lists the nodes with a visibility checkbox each (hiding a node
hides its subtree). The server binds to 127.0.0.1 unless told otherwise;
binding to any other address needs ``allow_remote=True`` and prints a warning,
because viser has no authentication.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Literal

import numpy as np

from scenes.graph import SceneGraph
from scenes.payloads import SH_C0, Camera, GaussianCloud, Mesh, PointCloud

__all__ = ["serve_scene", "is_local_host"]


def is_local_host(host: str) -> bool:
    """True for loopback addresses and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _wxyz_position(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from geo.transforms import rotmat_to_quat

    q = rotmat_to_quat(torch.as_tensor(np.asarray(T[:3, :3], np.float64))).numpy()
    return q, np.asarray(T[:3, 3], np.float64)


def _add_payload(server, name: str, payload, voxels: str, frustum_scale: float) -> None:
    import torch

    from geo.transforms import quat_to_rotmat
    from scenes.voxels import VoxelGrid

    sc = server.scene
    if isinstance(payload, GaussianCloud):
        R = quat_to_rotmat(torch.as_tensor(np.asarray(payload.quats, np.float64))).numpy()
        M = R * np.exp(np.asarray(payload.log_scales, np.float64))[:, None, :]
        cov = M @ M.transpose(0, 2, 1)
        rgb = np.clip(0.5 + SH_C0 * np.asarray(payload.sh[:, 0, :3], np.float64), 0, 1)
        sc.add_gaussian_splats(name, centers=np.asarray(payload.means, np.float32), covariances=cov.astype(np.float32),
                               rgbs=rgb.astype(np.float32), opacities=payload.opacities.astype(np.float32)[:, None])
    elif isinstance(payload, Mesh):
        if payload.uv is not None or payload.vertex_colors is not None:
            sc.add_mesh_trimesh(name, payload.to_trimesh())
        else:
            sc.add_mesh_simple(name, np.asarray(payload.vertices, np.float32), np.asarray(payload.faces, np.int32),
                               color=(180, 180, 180), side="double")
    elif isinstance(payload, PointCloud):
        colors = payload.colors if payload.colors is not None else (80, 80, 80)
        ext = np.ptp(payload.points, axis=0).max() if payload.num else 1.0
        sc.add_point_cloud(name, np.asarray(payload.points, np.float32), colors, point_size=float(ext) / 300 or 0.01)
    elif isinstance(payload, Camera):
        m = payload.model
        image = payload.image
        if image is not None:
            image = image[..., :3]
            if image.dtype != np.uint8:
                image = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
            step = max(1, max(image.shape[:2]) // 256)  # keep the websocket messages small
            image = image[::step, ::step]
        sc.add_camera_frustum(name, fov=float(2 * np.arctan(m.height / (2 * m.fy))), aspect=m.width / m.height,
                              scale=frustum_scale, image=image)
    elif isinstance(payload, VoxelGrid):
        occ = payload.density > 0
        if not occ.any():
            return
        vs = payload.voxel_size
        if voxels == "mesh":
            import trimesh

            boxes = trimesh.voxel.VoxelGrid(occ).as_boxes()
            boxes.apply_scale(1.0)
            v = np.asarray(boxes.vertices) * vs + np.asarray(payload.bounds_min) + 0.5 * vs
            sc.add_mesh_simple(name, v.astype(np.float32), np.asarray(boxes.faces, np.int32), color=(120, 160, 220))
        else:
            centres = np.asarray(payload.bounds_min) + (np.argwhere(occ) + 0.5) * vs
            sc.add_point_cloud(name, centres.astype(np.float32), (120, 160, 220), point_size=float(vs.min()))


def serve_scene(graph: SceneGraph, *, host: str = "127.0.0.1", port: int = 8080, allow_remote: bool = False,
                voxels: Literal["points", "mesh"] = "points", start_camera: str | None = None,
                hide: tuple[str, ...] = (), label: str | None = None):
    """Start a viser server showing ``graph`` and return it (it serves from a background thread).

    Args:
        graph: the scene.
        host: address to bind; anything but a loopback address needs ``allow_remote``.
        port: TCP port.
        allow_remote: allow a non-local ``host`` (prints a warning: anyone who can
            reach the port can see the scene).
        voxels: draw voxel grids as ``"points"`` or as a ``"mesh"`` of boxes.
        start_camera: path of a camera node whose pose and field of view new
            browser clients start from; default: viser's own.
        hide: paths of nodes (with their subtrees) that start hidden.
        label: page title.
    """
    if not is_local_host(host):
        if not allow_remote:
            raise ValueError(f"geo view: refusing to bind to non-local address {host!r}; "
                             "pass --allow-remote to expose the viewer (it has no authentication)")
        print(f"geo view: WARNING: binding to {host}:{port}; anyone who can reach this address can see the scene "
              "(viser has no authentication)", file=sys.stderr)
    if voxels not in ("points", "mesh"):
        raise ValueError(f"geo view: voxels must be 'points' or 'mesh', got {voxels!r}")
    for path in hide:
        graph[path]  # raises KeyError naming a missing node
    cam_node = None
    if start_camera is not None:
        cam_node = graph[start_camera]
        if not isinstance(cam_node.payload, Camera):
            raise ValueError(f"geo view: {start_camera} is not a camera node")
    import viser

    server = viser.ViserServer(host=host, port=port, label=label, verbose=False)
    server.gui.configure_theme(control_layout="collapsible", show_logo=False, show_share_button=False)
    server.scene.world_axes.visible = False
    bounds = graph.world_bounds()
    extent = float(np.linalg.norm(bounds[1] - bounds[0])) if bounds is not None else 1.0
    handles = {}
    for node in graph:
        name = "/scene" + node.path
        wxyz, pos = _wxyz_position(node.transform)
        handles[node.path] = server.scene.add_frame(name, show_axes=False, wxyz=wxyz, position=pos,
                                                    visible=node.path not in hide)
        if node.payload is not None:
            _add_payload(server, name + "/payload", node.payload, voxels, 0.05 * extent)

    with server.gui.add_folder("Scene nodes"):
        for node in graph:
            depth = node.path.count("/") - 1
            box = server.gui.add_checkbox("\u2003" * depth + node.name, initial_value=node.path not in hide,
                                          hint=f"{node.path} ({type(node.payload).__name__ if node.payload is not None else 'group'})")

            def toggle(event, path=node.path) -> None:
                handles[path].visible = event.target.value

            box.on_update(toggle)

    cams = [n.world_transform for n in graph.find(Camera)]
    if cams:  # the scene's up is the cameras' mean -y axis (OpenCV), when they roughly agree
        up = -np.mean([T[:3, 1] for T in cams], axis=0)
        if np.linalg.norm(up) > 0.5:
            server.scene.set_up_direction(tuple(up / np.linalg.norm(up)))
    if cam_node is not None:
        T = cam_node.world_transform
        m = cam_node.payload.model
        fov = float(2 * np.arctan(m.height / (2 * m.fy)))
        pos = T[:3, 3]
        dist = float(np.linalg.norm(pos - (bounds[0] + bounds[1]) / 2)) if bounds is not None else 1.0

        @server.on_client_connect
        def _(client) -> None:
            with client.atomic():
                client.camera.fov = fov
                client.camera.up_direction = tuple(-T[:3, 1])
                client.camera.position = tuple(pos)
                client.camera.look_at = tuple(pos + T[:3, 2] * dist)
    server.handles = handles  # for tests and scripting: node path -> frame handle
    return server
