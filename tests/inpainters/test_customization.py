"""Scene customisation: masks and loss weights, learning, the on-disk cache, and the `customize` command."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from rich.console import Console

from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.inpainters import LDMInpainterConfig, OpenCVInpainterConfig
from ns_diffusion_methods.inpainters.commands import CustomizeCommand
from ns_diffusion_methods.inpainters.customization import (
    batch_loss,
    customize,
    data_key,
    latent_weights,
    masked_diffusion_loss,
    random_crops,
    random_rectangles,
    read_capture,
    train_lora,
    training_batch,
)
from ns_diffusion_methods.inpainters.ldm import CustomizationConfig

SETTINGS = CustomizationConfig(steps=3, learning_rate=1e-2, batch_size=2)


def _config(**settings):
    return LDMInpainterConfig(model="tiny", resolution=32,
                           customization=dataclasses.replace(SETTINGS, **settings))


def _scene(n=3):
    torch.manual_seed(0)
    images = torch.rand(n, 3, 40, 48)
    masks = torch.zeros(n, 1, 40, 48, dtype=torch.bool)
    masks[:, :, 10:20, 10:25] = True
    return images, masks


def _console():
    return Console(record=True, width=200, force_terminal=False)


def test_random_rectangles():
    generator = torch.Generator().manual_seed(0)
    masks = random_rectangles(16, 32, dataclasses.replace(SETTINGS, mask_everything_probability=0.0), generator)
    assert masks.shape == (16, 1, 32, 32) and masks.dtype == torch.bool
    coverage = masks.float().mean(dim=(1, 2, 3))
    assert torch.all(coverage > 0) and torch.all(coverage < 1)
    # a single rectangle of side fraction exactly 0.25 covers 8 x 8 pixels
    one = dataclasses.replace(SETTINGS, max_rectangles=1, rectangle_size=(0.25, 0.25), mask_everything_probability=0)
    assert torch.all(random_rectangles(4, 32, one, generator).sum(dim=(1, 2, 3)) == 64)
    everything = dataclasses.replace(SETTINGS, mask_everything_probability=1.0)
    assert random_rectangles(3, 32, everything, generator).all()


def test_random_crops_follow_the_object_mask():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 48)  # shorter side already 32: crops are plain slices
    masks = torch.zeros(4, 1, 32, 48, dtype=torch.bool)
    masks[:, :, 8:20, 18:40] = True
    images[masks.expand_as(images)] = 5.0  # mark the object pixels in the image itself
    crops, crop_masks = random_crops(images, masks, (32, 48), 32, torch.Generator().manual_seed(0))
    assert crops.shape == (4, 3, 32, 32) and crop_masks.shape == (4, 1, 32, 32)
    assert torch.equal(crop_masks, crops[:, :1] == 5.0)
    assert crop_masks.any()
    # larger images are resized (to 32 x 48) before cropping; a mask pixel touching the object stays object
    big_masks = masks.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
    _, resized = random_crops(torch.rand(4, 3, 64, 96), big_masks, (32, 48), 32, torch.Generator().manual_seed(0))
    assert torch.equal(resized, crop_masks)


def test_latent_weights_and_masked_loss_ignore_the_object():
    masks = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks[0, 0, 3, 3] = True  # one pixel touches latent cell (1, 1) of a 4 x 4 grid
    weights = latent_weights(masks, (4, 4))
    expected = torch.ones(1, 1, 4, 4)
    expected[0, 0, 1, 1] = 0
    assert torch.equal(weights, expected)
    target = torch.zeros(1, 2, 4, 4)
    prediction = torch.ones(1, 2, 4, 4)
    assert masked_diffusion_loss(prediction, target, weights).item() == pytest.approx(1.0)
    prediction[:, :, 1, 1] = 100.0  # anything inside the object is free
    assert masked_diffusion_loss(prediction, target, weights).item() == pytest.approx(1.0)
    prediction[:, 0, 0, 0] = 3.0  # (9 - 1) extra over 30 weighted elements
    assert masked_diffusion_loss(prediction, target, weights).item() == pytest.approx(1.0 + 8.0 / 30.0)


def test_a_few_steps_lower_the_masked_loss():
    images, masks = _scene()
    config = _config(steps=30, batch_size=4)
    inpainter = config.setup(device="cpu")

    def evaluate():
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return sum(batch_loss(inpainter, training_batch(inpainter, images, masks, config.customization,
                                                            generator), config.prompt).item()
                       for _ in range(8)) / 8

    before = evaluate()
    losses = train_lora(inpainter, images, masks, config, console=_console())
    assert len(losses) == 30
    after = evaluate()
    assert after < 0.97 * before, (before, after)
    assert not any(p.requires_grad for p in inpainter.unet.parameters())


def test_cache_hit_reuses_the_folder_and_changes_in_data_change_the_key(tmp_path):
    images, masks = _scene()
    config = _config()
    console = _console()
    folder = customize(images, masks, config, tmp_path, console=console)
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    record = json.loads((folder / "customization.json").read_text())
    assert record["key"] == data_key(images, masks, config) and record["num_images"] == 3
    assert record["training_image_size"] == [32, 40]  # 40 x 48 at short side 32: 48 * 32 / 40 = 38.4 -> 40
    stamp = (folder / "adapter_model.safetensors").stat().st_mtime_ns

    console = _console()
    assert customize(images.clone(), masks.clone(), config, tmp_path, console=console) == folder
    assert "reusing the cached LoRA" in console.export_text()
    assert (folder / "adapter_model.safetensors").stat().st_mtime_ns == stamp

    key = data_key(images, masks, config)
    changed = images.clone()
    changed[1, 2, 5, 7] += 0.5
    other_mask = masks.clone()
    other_mask[0, 0, 0, 0] = True
    assert data_key(changed, masks, config) != key
    assert data_key(images, other_mask, config) != key
    assert data_key(images, masks, dataclasses.replace(config, model="other/model")) != key
    assert data_key(images, masks, _config(steps=4)) != key
    assert data_key(images, masks, dataclasses.replace(config, prompt="a photo of zwx scene")) != key
    assert data_key(images, masks, dataclasses.replace(config, resolution=24)) != key  # the crops' scale
    # settings that do not affect training (inference steps, guidance) keep the key
    assert data_key(images, masks, dataclasses.replace(config, num_inference_steps=7, guidance_scale=2.0)) == key


def test_customizing_a_built_inpainter_in_place_matches_loading_the_folder(tmp_path):
    images, masks = _scene()
    config = _config()
    inpainter = config.setup(device="cpu")
    folder = customize(images, masks, config, tmp_path, inpainter=inpainter, console=_console())
    reloaded = dataclasses.replace(config, lora_path=folder).setup(device="cpu")
    sample = torch.randn(1, 9, 4, 4, generator=torch.Generator().manual_seed(0))
    text = inpainter.encode_prompt(config.prompt)
    with torch.no_grad():
        a = inpainter.unet(sample, 5, encoder_hidden_states=text).sample
        b = reloaded.unet(sample, 5, encoder_hidden_states=text).sample
    assert torch.allclose(a, b, atol=1e-6)
    # a cache hit loads the adapter into a fresh base inpainter as well
    fresh = config.setup(device="cpu")
    assert customize(images, masks, config, tmp_path, inpainter=fresh, console=_console()) == folder
    with torch.no_grad():
        assert torch.allclose(fresh.unet(sample, 5, encoder_hidden_states=text).sample, a, atol=1e-6)


def test_opencv_is_skipped_with_a_message(tmp_path):
    images, masks = _scene()
    console = _console()
    assert customize(images, masks, OpenCVInpainterConfig(), tmp_path, console=console) is None
    assert "skipped" in console.export_text()
    assert not any(tmp_path.iterdir())


def test_command_on_the_synthetic_capture(object_removal_capture, tmp_path, capsys):
    from ns_diffusion_methods.cli.main import main

    images, masks = read_capture(object_removal_capture)
    meta = json.loads((object_removal_capture / "transforms.json").read_text())
    assert images.shape[0] == len(meta["train_filenames"])  # evaluation views (ground truth) are never used
    assert masks.any() and not masks.all()
    code = main(["customize", "--data", str(object_removal_capture), "--model", "tiny", "--num-steps", "2",
                 "--resolution", "32", "--batch-size", "2", "--output", str(tmp_path / "cache"), "--device", "cpu"])
    assert code == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1]
    assert (tmp_path / "cache") in __import__("pathlib").Path(folder).parents
    assert json.loads((__import__("pathlib").Path(folder) / "customization.json").read_text())["num_images"] == \
        images.shape[0]


def test_capture_without_split_lists_leaves_out_frames_named_eval(object_removal_capture, tmp_path):
    """Without split lists, customisation uses the frames ``object-mask-data`` trains on: not the ``*eval*`` ones."""
    import shutil

    capture = tmp_path / "capture"
    shutil.copytree(object_removal_capture, capture)
    meta = json.loads((capture / "transforms.json").read_text())
    num_train = len(meta["train_filenames"])
    for key in ("train_filenames", "val_filenames", "test_filenames"):
        del meta[key]
    (capture / "transforms.json").write_text(json.dumps(meta))
    images, _ = read_capture(capture)
    assert images.shape[0] == num_train < len(meta["frames"])


def test_command_refuses_a_capture_with_a_bad_mask(object_removal_capture, tmp_path):
    import shutil

    capture = tmp_path / "capture"
    shutil.copytree(object_removal_capture, capture)
    meta = json.loads((capture / "transforms.json").read_text())
    bad = next(f for f in meta["frames"] if f["file_path"] in meta["train_filenames"])
    (capture / bad["object_mask_path"]).unlink()
    with pytest.raises(DataError, match=bad["object_mask_path"].split("/")[-1]):
        CustomizeCommand(data=capture, model="tiny", num_steps=1, output=tmp_path / "cache").main()
    assert not (tmp_path / "cache").exists()


def test_command_names_its_own_flag_for_a_missing_model(object_removal_capture, tmp_path):
    from ns_diffusion_methods.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="--model PATH") as info:
        CustomizeCommand(data=object_removal_capture, model="no-such-owner/no-such-model", num_steps=1,
                         output=tmp_path / "cache").main()
    assert "--pipeline" not in str(info.value)
