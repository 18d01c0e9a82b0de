"""The Fixer interface with a tiny Difix: sizes, references, chunking, determinism, files, config round trip."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from ns_diffusion_methods.data.images import load_image, save_image
from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig
from ns_diffusion_methods.fixers.difix.fixer import DifixFixer, working_size
from ns_diffusion_methods.fixers.identity import IdentityFixerConfig


@pytest.fixture(scope="module")
def fixer(tiny_difix):
    return DifixFixer(DifixFixerConfig(model="tiny", chunk_size=2), device="cpu", model=copy.deepcopy(tiny_difix))


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_odd_sizes_come_back_at_their_input_size(fixer):
    assert working_size(50, 70, 8) == (48, 72) and working_size(3, 5, 8) == (8, 8)
    out = fixer.fix(_rand(2, 3, 50, 70))
    assert out.shape == (2, 3, 50, 70) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert fixer.dtype == torch.float32  # dtype "auto" on CPU


def test_several_references_per_image_and_different_counts_per_call(fixer):
    images = _rand(3, 3, 40, 56, seed=1)
    references = [None, _rand(1, 3, 24, 24, seed=2), _rand(3, 3, 64, 48, seed=3)]  # any size, any count
    out = fixer.fix(images, references, seed=7)
    assert out.shape == images.shape
    # the references are used: changing image 2's references changes image 2 only
    other = [None, references[1], _rand(3, 3, 64, 48, seed=4)]
    moved = fixer.fix(images, other, seed=7)
    assert not torch.allclose(moved[2], out[2], atol=1e-4)
    torch.testing.assert_close(moved[0], out[0])
    # and an image without references gives what the batch gave it
    torch.testing.assert_close(fixer.fix(images[:1], seed=7), out[:1])


def test_deterministic_for_a_seed(fixer):
    images = _rand(2, 3, 32, 32, seed=5)
    first = fixer.fix(images, seed=3)
    assert torch.equal(first, fixer.fix(images, seed=3))
    assert torch.equal(fixer.fix(images), fixer.fix(images))  # default: config.seed
    assert not torch.equal(first, fixer.fix(images, seed=4))  # the posterior sample depends on the seed


def test_output_matches_the_model_when_no_resizing_is_needed(fixer):
    images = _rand(1, 3, 32, 48, seed=6)
    reference = _rand(1, 3, 32, 48, seed=8)
    out = fixer.fix(images, [reference], seed=2)
    with torch.no_grad():
        stacked = torch.stack([images, reference], dim=1) * 2 - 1
        direct = fixer.model(stacked, generator=torch.Generator().manual_seed(2))[:, 0]
    torch.testing.assert_close(out, ((direct + 1) / 2).clamp(0, 1))


def test_a_model_without_reference_training_ignores_references(tiny_difix):
    model = copy.deepcopy(tiny_difix)
    model.reference_views = False
    plain = DifixFixer(DifixFixerConfig(model="tiny"), model=model)
    images = _rand(1, 3, 32, 32)
    with pytest.warns(UserWarning, match="without reference views"):
        out = plain.fix(images, [_rand(1, 3, 32, 32, seed=1)])
    assert torch.equal(out, plain.fix(images))


def test_images_of_mixed_sizes_and_files(fixer, tmp_path):
    save_image(_rand(3, 20, 30), tmp_path / "a.png")
    save_image(_rand(3, 24, 24, seed=1), tmp_path / "ref.png")
    tensor = _rand(3, 16, 16, seed=2)
    out = fixer.fix_images([tmp_path / "a.png", tensor], [tmp_path / "ref.png", None], seed=1)
    assert [tuple(o.shape) for o in out] == [(3, 20, 30), (3, 16, 16)]
    single = fixer.fix(load_image(tmp_path / "a.png")[None], [load_image(tmp_path / "ref.png")[None]], seed=1)
    torch.testing.assert_close(out[0], single[0])


def test_bad_inputs_are_explained(fixer):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        fixer.fix(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="one entry per image"):
        fixer.fix(torch.rand(2, 3, 32, 32), [None])


def test_config_survives_yaml_and_identity_returns_its_input():
    config = DifixFixerConfig(model="nvidia/difix", dtype="bfloat16", chunk_size=3, resolution=(576, 1024))
    loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
    assert loaded == config and loaded._target is DifixFixer
    identity = IdentityFixerConfig().setup()
    images = _rand(2, 3, 8, 8)
    assert torch.equal(identity.fix(images, [None, _rand(1, 3, 4, 4)]), images)


@pytest.mark.cuda
def test_bf16_on_cuda_is_close_to_fp32(tiny_difix):
    images = _rand(2, 3, 64, 64)
    refs = [_rand(1, 3, 64, 64, seed=1), None]
    fp32 = DifixFixer(DifixFixerConfig(model="tiny", dtype="float32"), "cuda", copy.deepcopy(tiny_difix))
    bf16 = DifixFixer(DifixFixerConfig(model="tiny"), "cuda", copy.deepcopy(tiny_difix))
    assert bf16.dtype == torch.bfloat16
    difference = (fp32.fix(images.cuda(), refs) - bf16.fix(images.cuda(), refs)).abs().mean()
    assert difference < 0.05
