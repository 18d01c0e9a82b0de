"""train-fixer: the recipe learns, the losses are Difix's, checkpoints load, offline backbones fail clearly."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ns_diffusion_methods.errors import DataError, ModelUnavailableError
from ns_diffusion_methods.fixers.difix.model import DifixModel
from ns_diffusion_methods.fixers.training import (
    FixerTrainingConfig,
    GramLoss,
    PairedImages,
    build_lpips,
    evaluate_fixer,
    read_pairs,
    train_fixer,
    vgg16_features,
)


def _config(data, output, **kwargs) -> FixerTrainingConfig:
    defaults = dict(data=data, output=output, model="tiny", resolution=None, batch_size=4, learning_rate=1e-3,
                    lpips_loss_mult=0.0, gram_loss_mult=0.0, steps_per_save=0, steps_per_eval=0, steps_per_log=10,
                    device="cpu", seed=0)
    defaults.update(kwargs)
    return FixerTrainingConfig(**defaults)


def test_the_recipe_lowers_held_out_l2(tmp_path, synthetic_pairs):
    data = synthetic_pairs(tmp_path / "pairs", 24, test_count=4)
    result = train_fixer(_config(data, tmp_path / "run", num_steps=200))
    before, after = result.evaluations[0], result.evaluations[-1]
    assert before["step"] == 0 and after["step"] == 200
    assert after["l2"] < 0.35 * before["l2"], (before, after)
    assert after["psnr"] > before["psnr"] + 4.0
    # the final folder is a Difix model that reproduces the measured held-out error
    loaded = DifixModel.from_pretrained(result.model_dir)
    test_set = PairedImages(read_pairs(data, "test"), None, loaded.size_multiple)
    again = evaluate_fixer(loaded, test_set, torch.device("cpu"), seed=0)
    assert again["l2"] == pytest.approx(after["l2"], rel=1e-5)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {entry["split"] for entry in logged} == {"train", "test"}


def test_references_perceptual_losses_warmup_and_checkpoints(tmp_path, synthetic_pairs):
    data = synthetic_pairs(tmp_path / "pairs", 4, test_count=1, references=True)
    result = train_fixer(_config(data, tmp_path / "run", num_steps=3, batch_size=2, resolution=(32, 32),
                                 lpips_loss_mult=1.0, gram_loss_mult=0.5, gram_warmup_steps=1, gram_crop_size=16,
                                 random_loss_backbones=True, steps_per_save=2))
    assert "gram" not in result.losses[0] and "gram" in result.losses[1]  # after the warm-up only
    for entry in result.losses:
        expected = entry["l2"] + entry["lpips"] + 0.5 * entry.get("gram", 0.0)
        assert entry["loss"] == pytest.approx(expected, rel=1e-5)
    assert [p.name for p in result.checkpoints] == ["step-000002"]
    assert DifixModel.from_pretrained(result.checkpoints[0]).reference_views  # trained with references


def test_gram_loss_is_difix_formula():
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1),
                             nn.ReLU())
    loss_fn = GramLoss(features, layers=(1, 3), weights=(0.5, 2.0), crop_size=8)
    prediction, target = torch.rand(2, 3, 12, 10) * 2 - 1, torch.rand(2, 3, 12, 10) * 2 - 1
    loss = loss_fn(prediction, target, generator=random.Random(3))

    rng = random.Random(3)  # the same crop by hand
    top, left = rng.randint(0, 12 - 8), rng.randint(0, 10 - 8)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)

    def layer_outputs(x):
        x = ((x[..., top:top + 8, left:left + 8] + 1) / 2 - mean) / std
        first = features[1](features[0](x))
        return [first, features[3](features[2](first))]

    expected = 0.0
    for weight, fp, ft in zip((0.5, 2.0), layer_outputs(prediction), layer_outputs(target)):
        b, c, h, w = fp.shape
        gram_p = fp.reshape(b * c, h * w) @ fp.reshape(b * c, h * w).t()
        gram_t = ft.reshape(b * c, h * w) @ ft.reshape(b * c, h * w).t()
        expected = expected + weight * ((gram_p - gram_t) ** 2).mean() / (c * h * w)
    torch.testing.assert_close(loss, expected)
    assert loss_fn(target, target).item() == 0.0


def test_missing_backbone_weights_name_the_file_and_the_way_out():
    # the test suite has no torchvision weights and no network
    with pytest.raises(ModelUnavailableError, match=r"vgg16-397923af\.pth(.|\n)*--lpips-loss-mult 0"):
        build_lpips()
    with pytest.raises(ModelUnavailableError, match=r"vgg16-397923af\.pth(.|\n)*--gram-loss-mult 0"):
        vgg16_features()
    assert isinstance(vgg16_features(random_backbone=True)[-1], nn.ReLU)  # relu5_3 is the last layer kept


def test_bad_pair_files_are_explained(tmp_path, synthetic_pairs):
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(tmp_path / "none.json", "train")
    data = synthetic_pairs(tmp_path, 2, test_count=0)
    (tmp_path / "clean_1.png").unlink()
    with pytest.raises(DataError, match="clean_1.png"):
        read_pairs(data, "train")
    with pytest.raises(DataError, match="prompt"):
        read_pairs(data, "train", prompt="something else")


def _loss_and_gradients(model: DifixModel, images: torch.Tensor, target: torch.Tensor):
    model.zero_grad(set_to_none=True)
    prediction = model(images, generator=torch.Generator().manual_seed(1), decode_views="all")
    loss = F.mse_loss(prediction, target)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_with_references_gives_the_same_loss_and_gradients():
    model = DifixModel.tiny(seed=0).train()
    model.trainable_parameters()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 3, 16, 16, generator=generator) * 2 - 1  # 2 samples: render + 2 references each
    target = torch.rand(2, 3, 3, 16, 16, generator=generator) * 2 - 1
    loss, gradients = _loss_and_gradients(model, images, target)
    model.unet.enable_gradient_checkpointing()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.unet.modules())
    checkpointed_loss, checkpointed = _loss_and_gradients(model, images, target)
    torch.testing.assert_close(checkpointed_loss, loss)
    assert gradients.keys() == checkpointed.keys() and any(name.startswith("unet.") for name in gradients)
    for name in gradients:
        torch.testing.assert_close(checkpointed[name], gradients[name], rtol=1e-4, atol=1e-7, msg=name)


def test_train_fixer_with_gradient_checkpointing_and_references(tmp_path, synthetic_pairs):
    data = synthetic_pairs(tmp_path / "pairs", 2, test_count=0, references=True, size=16)
    runs = [train_fixer(_config(data, tmp_path / f"run{flag}", num_steps=2, batch_size=2, gradient_checkpointing=flag))
            for flag in (False, True)]
    assert [e["loss"] for e in runs[1].losses] == pytest.approx([e["loss"] for e in runs[0].losses], rel=1e-5)
    plain, checkpointed = (DifixModel.from_pretrained(run.model_dir) for run in runs)
    assert checkpointed.reference_views
    for (name, a), (_, b) in zip(plain.unet.named_parameters(), checkpointed.unet.named_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)
