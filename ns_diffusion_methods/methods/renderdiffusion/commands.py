"""``ns-diffusion sample renderdiffusion``, ``ns-diffusion inpaint renderdiffusion`` and
``ns-diffusion reconstruct renderdiffusion``.

All three load a trained run (``--load-config .../config.yml``) through nerfstudio's ``eval_setup`` and write PNGs
(and an animated GIF turntable) into ``--output`` (default
``outputs/ns-diffusion/<command>/renderdiffusion/<timestamp>``), with a progress bar per object and per reverse step:

- ``sample``: N unconditional objects. Each starts from x_T ~ N(0, I) at a "gen. view" camera drawn from the training
  cameras, runs the reverse process and renders a turntable of the final triplane.
- ``inpaint``: 3D-aware RePaint inpainting of one image. White pixels of ``--mask`` are repainted; the final
  triplane is rendered as a turntable. The image's camera is a training camera (``--camera-index``) or an SRN pose
  file (``--pose``, OpenCV camera-to-world, normalised like the dataset).
- ``reconstruct``: single-view reconstruction of one image (noised to ``--t-r``, reverse process to 0, final
  triplane), written as a turntable, the render at the image's camera and the triplane (``triplane.pt``). The
  image's camera is chosen as for ``inpaint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import tyro
from rich.console import Console
from torch import Tensor
from typing_extensions import Annotated

from ns_diffusion_methods.data.images import save_image
from ns_diffusion_methods.errors import DataError, UserFacingError
from ns_diffusion_methods.methods import commands_common
from ns_diffusion_methods.methods.commands_common import enlarged, read_image_at_size, write_turntable

CONSOLE = Console(stderr=True)


def load_pipeline(config_path: Path):
    """The trained RenderDiffusion pipeline of a run, in eval mode (training images loaded for their cameras)."""
    from ns_diffusion_methods.methods.renderdiffusion.pipeline import RenderDiffusionPipelineConfig

    return commands_common.load_pipeline(config_path, RenderDiffusionPipelineConfig, "renderdiffusion")


def turntable_cameras(camera_to_world: Tensor, intrinsics: Tensor, num_views: int) -> Tuple[Tensor, Tensor]:
    """``[1, V, 3, 4]`` cameras on the circle of ``camera_to_world`` about +z, and their intrinsics ``[1, V, 4]``."""
    from ns_diffusion_methods.methods.renderdiffusion.geometry import turntable

    views = turntable(camera_to_world, num_views)[None]
    return views, intrinsics.reshape(1, 1, 4).expand(1, num_views, 4)


@dataclass
class SampleCommand:
    """Generate objects with a trained RenderDiffusion run and write turntables."""

    load_config: Annotated[Path, tyro.conf.arg(metavar="CONFIG")]
    """The run's config.yml (written by ns-train renderdiffusion / renderdiffusion-small)."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """Output folder. Default: outputs/ns-diffusion/sample/renderdiffusion/<timestamp>."""
    num: int = 4
    """Number of objects to generate."""
    num_steps: Annotated[Optional[int], tyro.conf.arg(metavar="INT")] = None
    """Reverse steps from T-1 to 0 (default: the model's diffusion.num_inference_steps)."""
    num_views: int = 24
    """Turntable frames per object."""
    seed: int = 0
    """Seed of the gen. views and the noise."""
    scale: int = 4
    """Nearest-neighbour up-scaling of the written images (they are small)."""

    def main(self) -> int:
        """Run it."""
        from ns_diffusion_methods.cli.outputs import default_output
        from ns_diffusion_methods.engine.progress import progress_bars, step_task
        from ns_diffusion_methods.methods.renderdiffusion import procedures
        from ns_diffusion_methods.methods.renderdiffusion.pipeline import camera_tensors

        if self.num < 1 or self.num_views < 1:
            raise UserFacingError(f"`--num` and `--num-views` must be >= 1, but are {self.num} and {self.num_views}.")
        output = self.output if self.output is not None else default_output("sample", "renderdiffusion")
        pipeline, checkpoint = load_pipeline(self.load_config)
        model = pipeline.model
        generator = torch.Generator().manual_seed(self.seed)
        c2w_all, k_all = camera_tensors(pipeline.datamanager.train_dataset.cameras)
        size = model.image_size
        written: List[Path] = []
        CONSOLE.print(f"Sampling {self.num} objects from {checkpoint} ...")
        with progress_bars(CONSOLE) as progress:
            objects = progress.add_task(f"Generating {self.num} objects", total=self.num)
            for i in range(self.num):
                pick = int(torch.randint(c2w_all.shape[0], (1,), generator=generator))  # the gen. view
                c2w, intrinsics = c2w_all[pick: pick + 1].to(model.device), k_all[pick: pick + 1].to(model.device)
                with step_task(progress, f"  object {i + 1}: reverse steps") as on_step:
                    triplanes, image = procedures.generate(model.sampling_denoiser, model.diffusion, c2w, intrinsics,
                                                           size, size, num_steps=self.num_steps, generator=generator,
                                                           on_step=on_step)
                views, view_k = turntable_cameras(c2w[0], intrinsics[0], self.num_views)
                frames = procedures.render_views(model.sampling_denoiser, triplanes, views, view_k, size, size)[0]
                view_path = output / f"sample_{i:03d}_view.png"
                save_image(enlarged(image[0], self.scale), view_path)
                written += [view_path, *write_turntable(frames, output, f"sample_{i:03d}", self.scale)]
                progress.advance(objects)
        CONSOLE.print(f"Wrote {len(written)} files to {output}")
        return 0


def input_camera(pipeline, camera_index: int, pose: Optional[Path]) -> Tuple[Tensor, Tensor]:
    """The camera of a user's image: ``camera_to_worlds [1, 3, 4]`` and ``intrinsics [1, 4]`` on the model's device.

    The intrinsics are those of training camera ``camera_index``; the pose is that camera's, or the SRN pose file
    ``pose`` normalised with the dataset's radius and centre (:func:`~ns_diffusion_methods.methods.commands_common.
    user_cameras`)."""
    from ns_diffusion_methods.methods.renderdiffusion.pipeline import camera_tensors

    poses = [commands_common.read_pose_file(pose)] if pose is not None else []
    c2w, intrinsics = camera_tensors(commands_common.user_cameras(pipeline, [camera_index], poses))
    return c2w.to(pipeline.model.device), intrinsics.to(pipeline.model.device)


@dataclass
class InpaintCommand:
    """3D-aware inpainting of an image with a trained RenderDiffusion run (RePaint)."""

    load_config: Annotated[Path, tyro.conf.arg(metavar="CONFIG")]
    """The run's config.yml (written by ns-train renderdiffusion / renderdiffusion-small)."""
    image: Path
    """The image to inpaint (resized to the model's resolution if needed)."""
    mask: Path
    """Mask image: white (> 0.5) pixels are repainted, black pixels are kept."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """Output folder. Default: outputs/ns-diffusion/inpaint/renderdiffusion/<timestamp>."""
    num_steps: Annotated[Optional[int], tyro.conf.arg(metavar="INT")] = None
    """Reverse steps from T-1 to 0 (default: the model's diffusion.num_inference_steps)."""
    num_views: int = 24
    """Turntable frames."""
    seed: int = 0
    """Seed of the noise."""
    resample: int = 1
    """RePaint resamplings per step (1 = none)."""
    camera_index: int = 0
    """Training camera used as the image's camera (when --pose is not given)."""
    pose: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE")] = None
    """SRN pose file (OpenCV camera-to-world) of the image, normalised with the dataset's radius and centre; the
    intrinsics are those of training camera --camera-index."""
    scale: int = 4
    """Nearest-neighbour up-scaling of the written images."""

    def main(self) -> int:
        """Run it."""
        from ns_diffusion_methods.cli.outputs import default_output
        from ns_diffusion_methods.engine.progress import progress_bars, step_task
        from ns_diffusion_methods.methods.renderdiffusion import procedures

        output = self.output if self.output is not None else default_output("inpaint", "renderdiffusion")
        pipeline, checkpoint = load_pipeline(self.load_config)
        model = pipeline.model
        size = model.image_size
        image = read_image_at_size(self.image, size, "RGB", CONSOLE).to(model.device)
        mask = (read_image_at_size(self.mask, size, "L", CONSOLE) > 0.5).float().to(model.device)
        if mask.sum() == 0:
            raise DataError(f"The mask {self.mask} has no white pixels: there is nothing to inpaint.")
        c2w, intrinsics = input_camera(pipeline, self.camera_index, self.pose)
        generator = torch.Generator().manual_seed(self.seed)
        CONSOLE.print(f"Inpainting {self.image} with {checkpoint} ...")
        with progress_bars(CONSOLE) as progress, step_task(progress, "Inpainting: reverse steps") as on_step:
            triplanes, inpainted, render = procedures.inpaint(model.sampling_denoiser, model.diffusion, image, mask,
                                                              c2w, intrinsics, num_steps=self.num_steps,
                                                              resample=self.resample, generator=generator,
                                                              on_step=on_step)
        views, view_k = turntable_cameras(c2w[0], intrinsics[0], self.num_views)
        frames = procedures.render_views(model.sampling_denoiser, triplanes, views, view_k, size, size)[0]
        written = []
        for name, tensor in (("inpainted", inpainted[0]), ("render", render[0]), ("input", image[0]),
                             ("mask", mask[0].expand(3, -1, -1))):
            path = output / f"{name}.png"
            save_image(enlarged(tensor, self.scale), path)
            written.append(path)
        written += write_turntable(frames, output, "inpainted", self.scale)
        CONSOLE.print(f"Wrote {len(written)} files to {output}")
        return 0


@dataclass
class ReconstructCommand:
    """Single-view 3D reconstruction of an image with a trained RenderDiffusion run: turntable and triplane."""

    load_config: Annotated[Path, tyro.conf.arg(metavar="CONFIG")]
    """The run's config.yml (written by ns-train renderdiffusion / renderdiffusion-small)."""
    image: Path
    """The image to reconstruct (resized to the model's resolution if needed)."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """Output folder. Default: outputs/ns-diffusion/reconstruct/renderdiffusion/<timestamp>."""
    t_r: Annotated[Optional[int], tyro.conf.arg(metavar="INT")] = None
    """Noise level the image is diffused to before the reverse process (0: one clean pass, the paper's setting for
    renders; 40 for photographs). Default: the run's ``reconstruction_t_r``."""
    num_steps: Annotated[Optional[int], tyro.conf.arg(metavar="INT")] = None
    """Reverse steps from t_r to 0 (default: the run's ``reconstruction_steps``, else as dense as its
    ``diffusion.num_inference_steps`` over T)."""
    camera_index: int = 0
    """Training camera used as the image's camera (its intrinsics are used with --pose too)."""
    pose: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE")] = None
    """SRN pose file (OpenCV camera-to-world) of the image, normalised with the dataset's radius and centre."""
    num_views: int = 24
    """Turntable frames (about the up axis, starting at the image's camera)."""
    seed: int = 0
    """Seed of the noise (used when t_r > 0)."""
    scale: int = 4
    """Nearest-neighbour up-scaling of the written images."""

    def main(self) -> int:
        """Run it."""
        from ns_diffusion_methods.cli.outputs import default_output
        from ns_diffusion_methods.engine.progress import progress_bars, step_task
        from ns_diffusion_methods.methods.renderdiffusion import procedures

        if self.num_views < 1:
            raise UserFacingError(f"`--num-views` must be >= 1, but is {self.num_views}.")
        output = self.output if self.output is not None else default_output("reconstruct", "renderdiffusion")
        pipeline, checkpoint = load_pipeline(self.load_config)
        model = pipeline.model
        t_r = model.config.reconstruction_t_r if self.t_r is None else self.t_r
        T = model.diffusion.num_train_timesteps
        if not 0 <= t_r < T:
            raise UserFacingError(f"`--t-r` must be in [0, {T - 1}] (the run's diffusion has T = {T}), but is {t_r}.")
        num_steps = self.num_steps
        if num_steps is None and model.config.reconstruction_steps > 0:
            num_steps = model.config.reconstruction_steps
        size = model.image_size
        image = read_image_at_size(self.image, size, "RGB", CONSOLE).to(model.device)
        c2w, intrinsics = input_camera(pipeline, self.camera_index, self.pose)
        generator = torch.Generator().manual_seed(self.seed)
        CONSOLE.print(f"Reconstructing {self.image} with {checkpoint} (t_r = {t_r}) ...")
        views, view_k = turntable_cameras(c2w[0], intrinsics[0], self.num_views)
        with progress_bars(CONSOLE) as progress:
            with step_task(progress, "Reconstruction: reverse steps") as on_step:
                triplanes, render = procedures.reconstruct(model.sampling_denoiser, model.diffusion, image, c2w,
                                                           intrinsics, t_r=t_r, num_steps=num_steps,
                                                           generator=generator, on_step=on_step)
            with step_task(progress, "Rendering the turntable") as on_view:
                frames = []
                for view in range(self.num_views):
                    frames.append(procedures.render_views(model.sampling_denoiser, triplanes,
                                                          views[:, view: view + 1], view_k[:, view: view + 1],
                                                          size, size)[0, 0])
                    on_view(view + 1, self.num_views)
        frames_tensor = torch.stack(frames)
        written = []
        for name, tensor in (("input", image[0]), ("render", render[0])):
            path = output / f"{name}.png"
            save_image(enlarged(tensor, self.scale), path)
            written.append(path)
        written += write_turntable(frames_tensor, output, "reconstruction", self.scale)
        triplane_path = output / "triplane.pt"
        torch.save({"planes": triplanes.planes.cpu(), "rotations": triplanes.rotations.cpu(),
                    "camera_to_world": c2w.cpu(), "intrinsics": intrinsics.cpu(), "t_r": t_r,
                    "load_config": str(self.load_config)}, triplane_path)
        written.append(triplane_path)
        CONSOLE.print(f"Wrote {len(written)} files to {output}")
        return 0
