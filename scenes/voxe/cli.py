"""``geo edit`` as a tyro dataclass (registered in :mod:`tools.cli`).

Standard library, numpy and tyro only at module level, so ``geo --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from scenes.voxe.config import EditConfig, ExportConfig, GuidanceConfig, LocalConfig, ReconConfig

__all__ = ["Edit"]


@dataclass
class Edit:
    """Text-guided volumetric editing of a 3D object: Vox-E (Sella et al., ICCV 2023).

    SCENE_OR_DATA is a capture (transforms.json / COLMAP / LLFF; a voxel grid is
    reconstructed first) or a scene directory with a VoxelGrid. Writes OUT as a scene
    directory (/voxe/original, /voxe/edited) with mesh.ply, mesh.glb, gaussians.ply
    (3DGS) and turntable.png (before / after). Needs the [edit] extra and a local
    Stable Diffusion directory (--model-path); nothing is downloaded."""

    source: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="SCENE_OR_DATA")]
    prompt: str = ""
    """The edit, e.g. "a cow wearing a party hat"."""
    model_path: Optional[Path] = None
    """Local diffusers Stable Diffusion directory (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    out: Path = Path("out/edit")
    local: bool = False
    """Local edit: attention grids + graph cut; voxels outside the edit keep their original values."""
    backend: Literal["diffusers", "tiny"] = "diffusers"
    """``tiny``: a random config-built model (smoke tests only; the edit is meaningless)."""
    progress: bool = True
    recon: ReconConfig = field(default_factory=ReconConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    local_config: Annotated[LocalConfig, tyro.conf.arg(name="local-cfg")] = field(default_factory=LocalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def run(self) -> dict:
        import dataclasses
        import os

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from scenes.voxe.guidance import ModelPathError
        from scenes.voxe.pipeline import run_edit

        if not self.prompt.strip():
            raise SystemExit("geo edit: --prompt is required (the edit to make, e.g. --prompt \"a cow wearing a party hat\")")
        gcfg = dataclasses.replace(self.guidance, backend=self.backend,
                                   model_path=str(self.model_path) if self.model_path is not None else self.guidance.model_path)
        try:
            summary = run_edit(self.source, self.prompt, self.out, guidance_cfg=gcfg, recon_cfg=self.recon,
                               edit_cfg=self.edit, local_cfg=self.local_config if self.local else None,
                               export_cfg=self.export, progress=self.progress)
        except ModelPathError as e:
            raise SystemExit(f"geo edit: {e}") from None
        print(f"edited grid and exports written to {self.out} ({summary['seconds']:.0f} s)")
        return summary
