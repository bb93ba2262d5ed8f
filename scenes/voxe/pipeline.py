"""The whole ``geo edit`` pipeline: (reconstruct) -> edit -> (local refinement) -> scene + exports.

Output scene directory ``out``:

* ``/voxe/original`` and ``/voxe/edited`` :class:`VoxelGrid` nodes (and ``/voxe/edit_region``
  as ``meta`` statistics for local edits), the capture's cameras when it came from images;
* ``mesh.ply``, ``mesh.glb``, ``gaussians.ply``, ``turntable.png`` next to ``scene.json``.

The original grid is saved into ``out`` before editing, and the edit writes
``out/checkpoint.pt``; a rerun with the same ``out`` reuses both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["load_grid", "run_edit"]


def load_grid(path):
    """The first :class:`VoxelGrid` of a scene directory (prefers ``/voxe/original``), or None if ``path`` is no scene."""
    from scenes.io import load_scene
    from scenes.voxels import VoxelGrid

    p = Path(path)
    if not (p / "scene.json").is_file():
        return None, None
    g = load_scene(p)
    if "/voxe/original" in g:
        return g["/voxe/original"].payload, g
    nodes = g.find(VoxelGrid)
    if not nodes:
        raise ValueError(f"{p}: scene has no VoxelGrid node to edit")
    return nodes[0].payload, g


def run_edit(source, prompt: str, out, *, guidance_cfg, recon_cfg, edit_cfg, local_cfg=None, export_cfg=None,
             progress: bool = True, log=print, model=None) -> dict:
    """Run Vox-E on a capture (reconstructed first) or on a scene with a VoxelGrid.

    Args:
        source: capture directory (images + poses) or scene directory.
        prompt: the edit prompt.
        out: output scene directory.
        guidance_cfg: :class:`GuidanceConfig` (``model_path`` or ``backend="tiny"``).
        local_cfg: :class:`LocalConfig` for a local edit, or None for a global one.
        model: an already built :class:`DiffusionModel` (skips loading).

    Returns:
        a summary dict (also written to ``out/voxe.json``).
    """
    from scenes.graph import SceneGraph
    from scenes.io import save_scene
    from scenes.voxe.edit import edit_grid
    from scenes.voxe.export import export_all
    from scenes.voxe.guidance import Guidance, build_tiny_model, check_model_dir, load_stable_diffusion

    out = Path(out)
    # fail on a bad model path before spending minutes on reconstruction
    if model is None and guidance_cfg.backend == "diffusers":
        check_model_dir(guidance_cfg.model_path)
    summary: dict = {"prompt": prompt, "source": str(source), "local": local_cfg is not None}
    t0 = time.perf_counter()
    original, graph = load_grid(out) if (out / "scene.json").is_file() else (None, None)
    if original is not None:
        log(f"reusing the original grid saved in {out}")
    else:
        original, graph = load_grid(source)
    if original is None:
        from scenes.voxe.reconstruct import evaluate_grid, load_views, reconstruct

        views = load_views(source, recon_cfg.holdout_every, recon_cfg.max_size)
        log(f"reconstructing {len(views)} views at {recon_cfg.resolutions} ...")
        original, st = reconstruct(views, recon_cfg, progress=progress, log=log)
        ev = evaluate_grid(original, views, background=recon_cfg.background)
        summary["recon"] = {"psnr_test": ev["psnr"], "stages": st["stages"]}
        log(f"reconstruction: held-out PSNR {ev['psnr']:.2f} dB")
        from scenes.data import load_capture

        graph = load_capture(source, holdout_every=recon_cfg.holdout_every, max_size=recon_cfg.max_size, load_images=False)
    scene = SceneGraph(meta={"method": "voxe", "prompt": prompt})
    if graph is not None:
        from scenes.payloads import Camera

        for node in graph.find(Camera):
            cam = node.payload
            scene.add(f"/cameras/{node.name}", payload=Camera(model=cam.model, name=cam.name), transform=node.world_transform,
                      meta=dict(node.meta))
    scene.add("/voxe")
    scene.add("/voxe/original", payload=original)
    save_scene(scene, out)

    if model is None:
        model = build_tiny_model(seed=0) if guidance_cfg.backend == "tiny" else load_stable_diffusion(
            guidance_cfg.model_path, guidance_cfg.device, guidance_cfg.half)
    guidance = Guidance(model, guidance_cfg, total_steps=edit_cfg.iters, seed=edit_cfg.seed)
    log(f"editing with {guidance_cfg.backend} guidance for {edit_cfg.iters} iterations ...")
    edited, est = edit_grid(original, prompt, guidance, edit_cfg, out_dir=out, progress=progress, log=log)
    summary["edit"] = {"sec_per_iter": est["sec_per_iter"], "last": est["history"][-1] if est["history"] else None}
    if local_cfg is not None:
        from scenes.voxe.local import fit_attention_grids, refine_local, split_prompt_words

        obj, words = split_prompt_words(prompt, local_cfg.object_word, local_cfg.edit_words)
        log(f"local edit: object {obj!r}, edit words {words}")
        att = fit_attention_grids(edited, guidance, prompt, obj, words, local_cfg, render_size=edit_cfg.render_size,
                                  n_samples=edit_cfg.n_samples, fov_deg=edit_cfg.fov_deg, up=edit_cfg.up,
                                  front=edit_cfg.front_dir, seed=edit_cfg.seed, progress=progress)
        edited, region = refine_local(edited, original, att.numpy(), local_cfg)
        summary["local_region_voxels"] = int(region.sum())
        log(f"edit region: {int(region.sum())} voxels; the rest restored from the original")
    scene.add("/voxe/edited", payload=edited)
    save_scene(scene, out)  # replaces out (and the checkpoint) with the finished scene
    summary["files"] = export_all(out, edited, original, export_cfg, log=log)
    summary["seconds"] = time.perf_counter() - t0
    (out / "voxe.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary
