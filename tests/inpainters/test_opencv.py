"""The OpenCV backend and the backend-independent parts of the inpainter interface."""

from __future__ import annotations

import pytest
import torch
import yaml

from ns_diffusion_methods.inpainters import OpenCVInpainterConfig
from ns_diffusion_methods.inpainters.opencv import OpenCVInpainter


def _scene(batch=2, size=24):
    """Left half red, right half blue; a square hole in the middle filled with green (the 'object')."""
    images = torch.zeros(batch, 3, size, size)
    images[:, 0, :, : size // 2] = 1.0
    images[:, 2, :, size // 2:] = 1.0
    masks = torch.zeros(batch, 1, size, size, dtype=torch.bool)
    masks[:, :, 8:14, 2:9] = True  # inside the red half
    images[masks.expand_as(images)] = 0.0
    images[:, 1][masks[:, 0]] = 1.0
    return images, masks


def test_opencv_fills_hole_from_surroundings_and_keeps_outside_exactly():
    images, masks = _scene()
    images = images + 0.001  # not representable in 8 bit: the outside must still come back bit-exact
    inpainter = OpenCVInpainterConfig().setup(device="cpu")
    assert isinstance(inpainter, OpenCVInpainter) and not inpainter.uses_diffusion
    out = inpainter.inpaint(images, masks)
    assert out.shape == images.shape
    outside = ~masks.expand_as(images)
    assert torch.equal(out[outside], images[outside])
    hole = out.permute(0, 2, 3, 1)[masks[:, 0]]  # [N, 3]
    # the hole sits in the red half: red fills in, the green object is gone
    assert hole[:, 0].mean() > 0.9 and hole[:, 1].max() < 0.1


def test_opencv_ignores_start_timestep_and_source():
    images, masks = _scene(batch=1)
    inpainter = OpenCVInpainterConfig().setup(device="cpu")
    full = inpainter.inpaint(images, masks)
    partial = inpainter.inpaint(images, masks, start_timestep=500, source=torch.rand_like(images))
    assert torch.equal(full, partial)
    assert inpainter.num_train_timesteps == 1000


def test_inputs_are_validated():
    images, masks = _scene(batch=1)
    inpainter = OpenCVInpainterConfig().setup(device="cpu")
    with pytest.raises(ValueError, match="`masks` must be a bool"):
        inpainter.inpaint(images, masks.float())
    with pytest.raises(ValueError, match=r"`masks` must be \[B, 1, H, W\]"):
        inpainter.inpaint(images, masks[:, :, :-1])
    with pytest.raises(ValueError, match="without `source`"):
        inpainter.inpaint(images, masks, start_timestep=10)
    with pytest.raises(ValueError, match="`start_timestep` must be in"):
        inpainter.inpaint(images, masks, start_timestep=1000, source=images)
    with pytest.raises(ValueError, match="`method` must be one of"):
        OpenCVInpainterConfig(method="magic").setup()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`radius` must be >= 1"):
        OpenCVInpainterConfig(radius=0).setup()


def test_config_survives_yaml():
    config = OpenCVInpainterConfig(method="ns", radius=3)
    loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
    assert loaded == config
    assert isinstance(loaded.setup(), OpenCVInpainter)


def test_the_navier_stokes_method_and_the_radius_are_used():
    images, masks = _scene(batch=1)
    telea = OpenCVInpainterConfig().setup().inpaint(images, masks)
    ns = OpenCVInpainterConfig(method="ns").setup().inpaint(images, masks)
    wide = OpenCVInpainterConfig(radius=9).setup().inpaint(images, masks)
    assert not torch.equal(telea, ns) and not torch.equal(telea, wide)
