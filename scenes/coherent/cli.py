"""``geo reconstruct`` and ``geo eval`` as tyro dataclasses (registered in :mod:`tools.cli`).

Standard library, numpy and tyro only at module level, so ``geo --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from scenes.coherent.config import BaselineConfig, CoherentConfig, DataConfig

__all__ = ["Reconstruct", "Eval"]


@dataclass
class Reconstruct:
    """Sparse-view reconstruction into a Gaussian scene: CoherentGS (Paliwal et al. 2024) or plain 3DGS.

    Writes OUT as a scene directory (cameras + /gaussians) with gaussians.ply (INRIA),
    gaussians.splat, mesh.ply / mesh.glb (TSDF) and checkpoint.pt. Ctrl-C saves a
    checkpoint; --resume continues from it. Defaults are sized for a 2-core CPU."""

    data: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="DATA")]
    """Dataset (transforms.json / COLMAP / LLFF directory)."""
    out: Path = Path("out/reconstruct")
    """Output scene directory."""
    method: Literal["coherent", "3dgs"] = "coherent"
    views: int = 3
    """Number of training views (taken from the dataset's train split)."""
    iters: int = 200
    """Rendering iterations (CoherentGS adds its alignment steps, which render nothing)."""
    resolution: Optional[int] = 64
    """Longer image side used for training (images are area-downscaled); None keeps the size."""
    seed: int = 0
    resume: bool = False
    """Continue from OUT/checkpoint.pt."""
    checkpoint_every: int = 50
    exports: bool = True
    """Write the PLY / .splat / TSDF mesh exports."""
    evaluate: bool = True
    """Score the held-out views at the end (as `geo eval`)."""
    data_config: Annotated[DataConfig, tyro.conf.arg(name="data")] = field(default_factory=DataConfig)
    coherent: CoherentConfig = field(default_factory=CoherentConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def run(self) -> dict:
        from scenes.coherent.train import reconstruct

        res = reconstruct(
            self.data, self.out, method=self.method, views=self.views, iters=self.iters, resolution=self.resolution,
            seed=self.seed, resume=self.resume, checkpoint_every=self.checkpoint_every, coherent=self.coherent,
            baseline=self.baseline, data_cfg=self.data_config, exports=self.exports,
        )
        print(f"{self.method}: {res['steps']} steps in {res['seconds']:.1f} s -> {self.out}")
        if self.evaluate and not res.get("stopped"):
            from scenes.coherent.evaluate import evaluate

            try:
                res["eval"] = evaluate(self.out, self.data)
            except ValueError as e:  # no held-out views
                print(f"eval skipped: {e}")
        return res


@dataclass
class Eval:
    """Render the held-out views of a `geo reconstruct` output; report PSNR / SSIM and write a
    PNG grid (ground truth | render | error x4)."""

    scene: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="OUT")]
    """The reconstruction's scene directory."""
    data: Optional[Path] = None
    """Dataset with the held-out views (default: the one recorded in the scene)."""
    grid: Optional[Path] = None
    """Where to write the PNG grid (default OUT/eval_grid.png)."""
    holdout_every: Optional[int] = None
    """Override the test split rule recorded at training time."""

    def run(self) -> dict:
        from scenes.coherent.evaluate import evaluate

        return evaluate(self.scene, self.data, grid=self.grid, holdout_every=self.holdout_every)
