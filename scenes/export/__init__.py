"""Viewer and interchange exports of scene payloads.

==================  ==============================================================
module              what
==================  ==============================================================
``ply_gaussians``   INRIA 3DGS PLY: :func:`write_gaussian_ply` / :func:`read_gaussian_ply`
``splat``           antimatter15 ``.splat``: :func:`write_splat` / :func:`read_splat`
``ply_compressed``  SuperSplat compressed PLY: :func:`write_compressed_ply` / :func:`read_compressed_ply`
``mesh``            meshes (``.ply``, ``.obj``, ``.glb``) and point clouds (``.ply``):
                    :func:`write_mesh_file` / :func:`read_mesh_file`,
                    :func:`write_points_ply` / :func:`read_points_ply`
``gltf``            a whole scene as ``.glb``: :func:`write_scene_glb` / :func:`read_scene_glb`
``html``            a standalone viewer page: :func:`write_html`
``viewer``          ``geo view``: a viser server, :func:`serve_scene`
``tsdf``            mesh by TSDF fusion of rendered depth + colour (Open3D): :func:`tsdf_mesh`
``plyfile``         the bounded PLY header parser every PLY reader uses
==================  ==============================================================

Writers are atomic (temporary sibling, then rename) and drop Gaussians with
NaN/Inf parameters with a warning; they never write an empty file.
"""

from __future__ import annotations

from geo._lazy import lazy_exports

_LAZY = {
    "write_gaussian_ply": "ply_gaussians", "read_gaussian_ply": "ply_gaussians", "finite_gaussians": "ply_gaussians",
    "write_splat": "splat", "read_splat": "splat",
    "write_compressed_ply": "ply_compressed", "read_compressed_ply": "ply_compressed",
    "write_mesh_file": "mesh", "read_mesh_file": "mesh", "write_points_ply": "mesh", "read_points_ply": "mesh",
    "write_scene_glb": "gltf", "read_scene_glb": "gltf",
    "write_html": "html",
    "serve_scene": "viewer",
    "tsdf_mesh": "tsdf",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
