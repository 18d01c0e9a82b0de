"""``ns-diffusion sample ssdnerf`` and ``ns-diffusion reconstruct ssdnerf``.

- ``sample``: generate new objects with a trained SSDNeRF and write turntables. The sampling itself (DDIM from noise,
  turntable cameras and files) is in :mod:`ns_diffusion_methods.methods.ssdnerf.sample`.
- ``reconstruct``: reconstruct an object from 1 or 2 posed images of the user's: the procedure ``ns-eval`` applies to
  every held-out object (:func:`ns_diffusion_methods.methods.ssdnerf.reconstruction.reconstruct`: guided DDIM
  sampling, then fine-tuning with the cached prior gradient) with the run's settings for that number of views
  (:meth:`~ns_diffusion_methods.methods.ssdnerf.pipeline.SSDNeRFPipeline.reconstruction_settings`); it writes a
  turntable, each input next to its re-render, the code and the input views' PSNR. The images' cameras are SRN pose
  files normalised like the run's dataset, or training cameras, with the intrinsics of training cameras
  (:mod:`ns_diffusion_methods.methods.commands_common`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import List, Optional

import torch
import tyro
from rich.console import Console
from typing_extensions import Annotated

from ns_diffusion_methods.errors import UserFacingError

CONSOLE = Console(stderr=True)


@dataclass
class SampleCommand:
    """Generate new objects with a trained ssdnerf run (DDIM from noise) and write turntables."""

    load_config: Annotated[Path, tyro.conf.arg(metavar="CONFIG")]
    """The run's config.yml (written by ns-train ssdnerf / ssdnerf-small)."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """Output folder: per object a folder of frames and a GIF, plus samples.png and codes.pt. Default:
    outputs/ns-diffusion/sample/ssdnerf/<timestamp>."""
    num: int = 4
    """Number of objects to generate."""
    num_steps: int = 50
    """DDIM steps from noise to the object (SSDNeRF paper: 50)."""
    num_views: int = 24
    """Turntable frames per object."""
    seed: int = 0
    """Seed of the initial noise."""
    elevation_deg: Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT")] = None
    """Camera elevation in degrees (default: the training cameras' mean)."""
    distance: Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT")] = None
    """Camera distance from the origin (default: the training cameras' mean)."""

    def main(self) -> int:
        """Load the run, sample, render."""
        from ns_diffusion_methods.cli.outputs import default_output
        from ns_diffusion_methods.engine.progress import progress_bars, step_task
        from ns_diffusion_methods.methods.commands_common import load_pipeline
        from ns_diffusion_methods.methods.ssdnerf.pipeline import SSDNeRFPipelineConfig
        from ns_diffusion_methods.methods.ssdnerf.sample import generate_codes, save_turntables, turntable_cameras

        if self.num < 1 or self.num_steps < 1 or self.num_views < 1:
            raise UserFacingError(f"--num, --num-steps and --num-views must be >= 1, but got {self.num}, "
                                  f"{self.num_steps}, {self.num_views}.")
        output = self.output if self.output is not None else default_output("sample", "ssdnerf")
        pipeline, checkpoint = load_pipeline(self.load_config, SSDNeRFPipelineConfig, "ssdnerf")
        model = pipeline.model
        CONSOLE.print(f"Sampling {self.num} objects with {self.num_steps} DDIM steps (checkpoint {checkpoint}).")
        cameras = turntable_cameras(pipeline.datamanager.train_dataset.cameras, self.num_views, self.elevation_deg,
                                    self.distance).to(model.device)
        with progress_bars(CONSOLE) as progress:
            objects = progress.add_task(f"Generating {self.num} objects", total=self.num)
            with step_task(progress, f"  DDIM steps ({self.num} objects at once)") as on_step:
                codes = generate_codes(model, self.num, self.num_steps, self.seed, on_step=on_step)
            progress.update(objects, description=f"Rendering {self.num} turntables")
            written = save_turntables(model, codes, cameras, output,
                                      on_object=lambda done, total: progress.update(objects, completed=done))
        torch.save(codes.cpu(), output / "codes.pt")
        CONSOLE.print(f"Wrote {written[0]} and {len(written) - 1} turntables to {output}.")
        return 0


@dataclass
class ReconstructCommand:
    """Reconstruct an object from 1 or 2 posed images with a trained ssdnerf run (guided DDIM, then fine-tuning, as
    ns-eval does for held-out objects) and write a turntable, the re-rendered inputs and the code."""

    load_config: Annotated[Path, tyro.conf.arg(metavar="CONFIG")]
    """The run's config.yml (written by ns-train ssdnerf / ssdnerf-small)."""
    image: Annotated[List[Path], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="IMAGE")]
    """An image of the object (PNG or JPEG; transparent pixels are composited on white, like the dataset's; resized to
    the model's resolution if needed). Repeat for a second view: --image A --image B."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """Output folder. Default: outputs/ns-diffusion/reconstruct/ssdnerf/<timestamp>."""
    camera_index: Annotated[List[int], tyro.conf.arg(metavar="N")] = field(default_factory=lambda: [0])
    """Training camera(s) whose intrinsics (and, without --pose, whose pose) each image has: one index per image, or
    one for all images when --pose is given."""
    pose: Annotated[List[Path], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="FILE")] = field(
        default_factory=list)
    """SRN pose file of each image (16 numbers: OpenCV camera-to-world), one per --image in the same order,
    normalised with the run's dataset radius and centre. Without it, the images' poses are those of the training
    cameras --camera-index."""
    num_views: int = 24
    """Turntable frames (about the up axis, starting at the first image's camera)."""
    seed: int = 0
    """Seed of the test-time noise and ray order (ns-eval uses the run's eval_seed, 0 by default: the same seed gives
    the code ns-eval computes from the same views)."""
    finetune: bool = True
    """Fine-tune the code after guided sampling (the run's settings for 1 or 2 views). False: keep the guided sample."""

    def main(self) -> int:
        """Check the inputs, load the run, reconstruct, render, write."""
        import numpy as np

        from ns_diffusion_methods.cli.outputs import default_output
        from ns_diffusion_methods.data.images import save_image
        from ns_diffusion_methods.data.multi_object import ObjectViews
        from ns_diffusion_methods.engine.progress import progress_bars, step_task
        from ns_diffusion_methods.methods.commands_common import (
            image_at_size,
            load_pipeline,
            orbit_cameras,
            read_pose_file,
            read_user_image,
            user_cameras,
            write_turntable,
        )
        from ns_diffusion_methods.methods.ssdnerf.metrics import image_metrics
        from ns_diffusion_methods.methods.ssdnerf.pipeline import SSDNeRFPipelineConfig
        from ns_diffusion_methods.methods.ssdnerf.reconstruction import reconstruct, render_views

        # Everything that can be wrong with the arguments and files, before the run is loaded.
        indices = self._check_arguments()
        arrays = [read_user_image(path, "RGB") for path in self.image]
        poses = [read_pose_file(path) for path in self.pose]
        output = self.output if self.output is not None else default_output("reconstruct", "ssdnerf")

        pipeline, checkpoint = load_pipeline(self.load_config, SSDNeRFPipelineConfig, "ssdnerf")
        model = pipeline.model
        num = len(self.image)
        cameras = user_cameras(pipeline, indices, poses)
        images = torch.stack([
            image_at_size(array, path, (int(cameras.height[i]), int(cameras.width[i])), "RGB", CONSOLE)[0]
            for i, (array, path) in enumerate(zip(arrays, self.image))]).permute(0, 2, 3, 1)  # [n, H, W, 3]
        views = ObjectViews(object_index=0, name="input", cameras=cameras.to(model.device),
                            images=images.to(model.device), image_indices=torch.arange(num),
                            input_views=list(range(num)))
        settings = pipeline.reconstruction_settings(num)
        if not self.finetune:
            settings = replace(settings, finetune="none")
        CONSOLE.print(f"Reconstructing from {num} view(s) with {checkpoint} (init {settings.init}, "
                      f"{settings.ddim_steps} DDIM steps, fine-tuning {settings.finetune}, seed {self.seed}) ...")
        turntable = orbit_cameras(cameras[0:1], self.num_views).to(model.device)
        with progress_bars(CONSOLE) as progress:
            with step_task(progress, "Reconstruction steps") as steps:
                def on_phase_step(phase: str, done: int, total: int) -> None:
                    steps.describe(f"{phase} steps")
                    steps(done, total)

                code = reconstruct(model, [views], settings, seed=self.seed, on_phase_step=on_phase_step)[0]
            with step_task(progress, "Rendering the turntable") as on_view:
                frames = []
                for view in range(self.num_views):
                    frames.append(render_views(model, code, turntable[view: view + 1])[0])
                    on_view(view + 1, self.num_views)
        renders = render_views(model, code, views.cameras)

        written = write_turntable(torch.stack(frames).permute(0, 3, 1, 2), output, "reconstruction", with_frames=True)
        psnrs = []
        for i, (render, target) in enumerate(zip(renders, views.images)):
            psnrs.append(image_metrics(render, target, with_lpips=False)["psnr"])
            pair = torch.cat([target, render.clamp(0, 1)], dim=1)  # [H, 2W, 3]: input | re-render
            path = output / f"input_{i}.png"
            save_image((pair.cpu().numpy() * 255).round().astype(np.uint8), path)
            written.append(path)
        code_path, summary_path = output / "code.pt", output / "reconstruction.json"
        torch.save(code.cpu(), code_path)
        summary = {
            "load_config": str(self.load_config), "checkpoint": str(checkpoint),
            "images": [str(path) for path in self.image], "poses": [str(path) for path in self.pose] or None,
            "camera_indices": indices, "seed": self.seed, "settings": asdict(settings),
            "input_psnr": psnrs, "input_psnr_mean": float(np.mean(psnrs)),
        }
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        written += [code_path, summary_path]
        CONSOLE.print(f"Input-view PSNR {', '.join(f'{value:.2f}' for value in psnrs)} dB. Wrote {len(written)} files "
                      f"(and {self.num_views} turntable frames) to {output}")
        return 0

    def _check_arguments(self) -> List[int]:
        """The training camera index of each image, after checking the numbers of images, poses and indices."""
        num = len(self.image)
        if not 1 <= num <= 2:
            raise UserFacingError(f"ssdnerf reconstructs from 1 or 2 images (the paper's 1- and 2-view settings), but "
                                  f"{num} were given. Pass --image once or twice.")
        if self.num_views < 1:
            raise UserFacingError(f"`--num-views` must be >= 1, but is {self.num_views}.")
        indices = list(self.camera_index)
        if self.pose:
            if len(self.pose) != num:
                raise UserFacingError(f"{num} image(s) but {len(self.pose)} pose file(s): pass one --pose per --image, "
                                      f"in the same order (or none, to use training cameras' poses).")
            if len(indices) not in (1, num):
                raise UserFacingError(f"With --pose, --camera-index gives the intrinsics: pass one index for all "
                                      f"images or one per image, but {len(indices)} were given for {num} images.")
            return indices * num if len(indices) == 1 else indices
        if len(indices) != num:
            raise UserFacingError(f"{num} images need their cameras: pass one --pose per --image, or --camera-index "
                                  f"with one training camera per image ({len(indices)} given).")
        return indices
