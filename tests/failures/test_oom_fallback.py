"""Out of GPU memory in a render or a fix: smaller chunks and the same result, instead of a killed run.

The network's forward is wrapped to raise ``torch.cuda.OutOfMemoryError`` whenever it gets more rays (render) or
images (fix) than a limit, as a GPU with less memory would; this runs on the CPU.
"""

from __future__ import annotations

import pytest
import torch

from ns_diffusion_methods.errors import ResourceError


def _oom_above(module: torch.nn.Module, limit: int, size_of) -> list:
    """Make ``module.forward`` raise CUDA OOM for inputs larger than ``limit``; returns the sizes it was called with."""
    forward, sizes = module.forward, []

    def limited(*args, **kwargs):
        size = size_of(*args, **kwargs)
        sizes.append(size)
        if size > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {size} units.")
        return forward(*args, **kwargs)

    module.forward = limited
    return sizes


@pytest.fixture(scope="module")
def nerfacto_and_camera():
    from nerfstudio.cameras.cameras import Cameras, CameraType
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    from ns_diffusion_methods.metrics.lpips import package_lpips_in_stock_models

    torch.manual_seed(0)
    config = NerfactoModelConfig(implementation="torch", num_levels=4, log2_hashmap_size=12, max_res=64,
                                 hidden_dim=16, hidden_dim_color=16, num_proposal_samples_per_ray=(16, 8),
                                 num_nerf_samples_per_ray=8, eval_num_rays_per_chunk=1024)
    with package_lpips_in_stock_models():  # offline: stock nerfacto's LPIPS is unavailable, not fatal
        model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1,
                             metadata={})
    c2w = torch.eye(4)[:3][None]
    c2w[0, 2, 3] = 2.0  # 2 units behind the box centre, looking down -z at it
    camera = Cameras(camera_to_worlds=c2w, fx=20.0, fy=20.0, cx=16.0, cy=12.0, width=32, height=24,
                     camera_type=CameraType.PERSPECTIVE)
    return model, camera


def test_a_render_out_of_memory_halves_the_ray_chunk_and_renders_the_same(nerfacto_and_camera):
    from ns_diffusion_methods.dataset_updates.render import render_camera_outputs

    model, camera = nerfacto_and_camera
    expected = render_camera_outputs(model, camera)  # 768 rays in one chunk of 1024
    sizes = _oom_above(model, 200, lambda ray_bundle: len(ray_bundle))
    try:
        outputs = render_camera_outputs(model, camera, min_chunk=16)
        assert model.config.eval_num_rays_per_chunk == 128  # 1024 -> 512 -> 256 -> 128, kept from now on
        assert max(s for s in sizes if s <= 200) == 128 and sizes[:3] == [768, 512, 256]
        for name in ("rgb", "accumulation"):
            torch.testing.assert_close(outputs[name], expected[name], atol=1e-5, rtol=1e-5)

        with pytest.raises(ResourceError, match=r"Out of GPU memory rendering a 32x24 view .* with 64 rays per "
                                                r"chunk \(the smallest tried\)\. Free GPU memory"):
            _oom_above(model, 10, lambda ray_bundle: len(ray_bundle))
            model.config.eval_num_rays_per_chunk = 128
            render_camera_outputs(model, camera, min_chunk=64)
    finally:
        del model.forward  # back to the class's forward
        model.config.eval_num_rays_per_chunk = 1024


def _fixer(chunk_size: int):
    from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig
    from ns_diffusion_methods.fixers.difix.fixer import DifixFixer
    from ns_diffusion_methods.fixers.difix.model import DifixModel

    torch.manual_seed(0)  # peft initialises the decoder LoRA from the global generator
    return DifixFixer(DifixFixerConfig(model="tiny", chunk_size=chunk_size), device="cpu",
                      model=DifixModel.tiny(seed=0))


def test_a_fix_out_of_memory_halves_the_batch_and_fixes_the_same():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(5, 3, 24, 32, generator=generator)
    references = [torch.rand(1, 3, 24, 32, generator=generator) for _ in range(5)]
    expected = _fixer(chunk_size=4).fix(images, references, seed=7)

    fixer = _fixer(chunk_size=4)
    sizes = _oom_above(fixer.model, 1, lambda views, **kwargs: views.shape[0])
    with pytest.warns(UserWarning, match="retrying with 2 per pass"):
        fixed = fixer.fix(images, references, seed=7)
    assert fixer.chunk_size == 1 and sizes[:3] == [4, 2, 1]  # 4 -> 2 -> 1 image per pass, kept from now on
    torch.testing.assert_close(fixed, expected, atol=1e-5, rtol=1e-5)  # the same noise is drawn on the retry

    _oom_above(fixer.model, 0, lambda views, **kwargs: views.shape[0])
    with pytest.raises(ResourceError, match=r"Out of GPU memory fixing a single 32x24 image with 1 reference "
                                            r"view\(s\) \(`tiny`, torch.float32\)\. Free GPU memory"):
        fixer.fix(images, references, seed=7)
