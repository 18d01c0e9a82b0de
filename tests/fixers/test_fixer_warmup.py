"""train-fixer's options for random starting weights: the autoencoder warm-up (what the training steps receive,
which weights it trains, its settings), the cosine learning-rate schedule and the pair augmentations."""

from __future__ import annotations

import math

import pytest
import torch

from ns_diffusion_methods.fixers.difix.model import DifixModel
from ns_diffusion_methods.fixers.training import (
    FixerTrainingConfig,
    PairedImages,
    augment_pairs,
    read_pairs,
    train_fixer,
)


def _config(data, output, **kwargs) -> FixerTrainingConfig:
    defaults = dict(data=data, output=output, model="tiny", resolution=(32, 32), batch_size=2, learning_rate=1e-3,
                    lpips_loss_mult=0.0, gram_loss_mult=0.0, steps_per_save=0, steps_per_eval=0, steps_per_log=1,
                    device="cpu", seed=0)
    defaults.update(kwargs)
    return FixerTrainingConfig(**defaults)


@pytest.fixture
def record_training_steps(monkeypatch):
    """Records, for every training forward pass (decode_views="all"), the input views, whether the decoder uses its
    skips, and copies of one VAE encoder weight, one decoder base weight (both frozen in Difix's recipe) and the
    finest skip convolution (weight and LoRA B) as they are at that step."""
    calls = []
    original = DifixModel.forward

    def forward(self, images, generator=None, decode_views="first"):
        if decode_views == "all":
            calls.append({"images": images.detach().clone(), "ignore_skip": self.ignore_skip,
                          "encoder": self.vae.encoder.conv_in.weight.detach().clone(),
                          "decoder": self.vae.decoder.conv_out.base_layer.weight.detach().clone(),
                          "skip": self.vae.decoder.skip_conv_4.base_layer.weight.detach().clone(),
                          "skip_lora_b": self.vae.decoder.skip_conv_4.lora_B["vae_skip"].weight.detach().clone()})
        return original(self, images, generator=generator, decode_views=decode_views)

    monkeypatch.setattr(DifixModel, "forward", forward)
    return calls


def _which(view: torch.Tensor, candidates: dict) -> str:
    """The name of the candidate image ``view`` equals exactly (each must match exactly one)."""
    names = [name for name, image in candidates.items() if torch.equal(view, image)]
    assert len(names) == 1, names
    return names[0]


def test_warmup_steps_autoencode_the_targets_then_train_on_the_real_pairs(tmp_path, synthetic_pairs,
                                                                          record_training_steps):
    data = synthetic_pairs(tmp_path / "pairs", 4, test_count=1, references=True)
    train_fixer(_config(data, tmp_path / "run", num_steps=6, autoencoder_warmup_steps=3))
    assert len(record_training_steps) == 6
    # the very tensors the data path makes of each pair: degraded, clean and reference images at the training size
    items = PairedImages(read_pairs(data, "train"), (32, 32), 8)
    degraded = {f"degraded {i}": items[i]["source"][0] for i in range(len(items))}
    clean = {f"clean {i}": items[i]["target"][0] for i in range(len(items))}
    references = {f"reference {i}": items[i]["source"][1] for i in range(len(items))}
    for step, call in enumerate(record_training_steps, start=1):
        images = call["images"]
        assert images.shape == (2, 2, 3, 32, 32)  # batch of 2 pairs, each (image, reference)
        for sample in images:
            first = _which(sample[0], {**degraded, **clean})
            # steps 1-3: the clean target in place of the render; then the real degraded render
            assert first.startswith("clean" if step <= 3 else "degraded"), (step, first)
            # the reference view stays the pair's own reference in both phases
            assert _which(sample[1], references) == first.replace("clean", "reference").replace("degraded",
                                                                                              "reference")


def test_without_warmup_every_step_gets_the_real_pairs(tmp_path, synthetic_pairs, record_training_steps):
    data = synthetic_pairs(tmp_path / "pairs", 4, test_count=1)
    train_fixer(_config(data, tmp_path / "run", num_steps=3))
    items = PairedImages(read_pairs(data, "train"), (32, 32), 8)
    degraded = {f"degraded {i}": items[i]["source"][0] for i in range(len(items))}
    clean = {f"clean {i}": items[i]["target"][0] for i in range(len(items))}
    for call in record_training_steps:
        for sample in call["images"]:
            assert _which(sample[0], {**degraded, **clean}).startswith("degraded")


def test_the_warmup_leaves_the_vae_frozen(tmp_path, synthetic_pairs, record_training_steps):
    data = synthetic_pairs(tmp_path / "pairs", 4, test_count=1)
    train_fixer(_config(data, tmp_path / "run", num_steps=3, autoencoder_warmup_steps=2))
    first = record_training_steps[0]
    for call in record_training_steps[1:]:
        assert torch.equal(call["encoder"], first["encoder"]) and torch.equal(call["decoder"], first["decoder"])
    # the skips are used and trained throughout, never restarted
    assert not any(call["ignore_skip"] for call in record_training_steps)
    assert not torch.equal(record_training_steps[1]["skip"], first["skip"])
    assert not torch.any(record_training_steps[2]["skip"] == 1e-5)


@pytest.mark.parametrize("settings, message", [
    (dict(autoencoder_warmup_steps=-1), "--autoencoder-warmup-steps must be >= 0"),
    (dict(autoencoder_warmup_steps=10, num_steps=10), "leaves none of --num-steps 10"),
])
def test_bad_warmup_settings_are_refused_with_the_reason(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        FixerTrainingConfig(data=tmp_path / "data.json", **settings)
    FixerTrainingConfig(data=tmp_path / "data.json", autoencoder_warmup_steps=9, num_steps=10)  # one real step: fine


def test_cosine_schedule_goes_from_the_learning_rate_to_zero(tmp_path, synthetic_pairs):
    data = synthetic_pairs(tmp_path / "pairs", 4, test_count=1)
    cosine = train_fixer(_config(data, tmp_path / "cosine", num_steps=4, learning_rate_schedule="cosine"))
    # the rate used by step k (1-based) is lr * (1 + cos(pi (k - 1) / N)) / 2
    expected = [1e-3 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert [entry["lr"] for entry in cosine.losses] == pytest.approx(expected, rel=1e-9)
    constant = train_fixer(_config(data, tmp_path / "constant", num_steps=4))
    assert [entry["lr"] for entry in constant.losses] == [1e-3] * 4


@pytest.mark.parametrize("mode", ["flip", "flip-and-colour"])
def test_augmentations_change_every_view_and_the_target_alike(mode):
    # pixel values that name their sample, view, channel, row and column, so any rearrangement is identifiable
    batch, views, height, width = 32, 2, 3, 5
    index = torch.arange(batch * views * 3 * height * width, dtype=torch.float32)
    source = index.reshape(batch, views, 3, height, width)
    target = -source
    new_source, new_target = augment_pairs(source, target, mode, torch.Generator().manual_seed(0))
    flipped_count, permuted_count = 0, 0
    for b in range(batch):
        # pixel value = (((b * views + v) * 3 + c) * height + h) * width + w: read column and channel back
        flipped = int(new_source[b, 0, 0, 0, 0]) % width == width - 1
        flipped_count += flipped
        original = source[b].flip(-1) if flipped else source[b]
        order = [int(new_source[b, 0, k, 0, 0]) // (height * width) % 3 for k in range(3)]
        permuted_count += order != [0, 1, 2]
        expected = original[:, order]
        assert torch.equal(new_source[b], expected)  # every view of the pair alike
        assert torch.equal(new_target[b], -expected)  # and its target
    assert 0 < flipped_count < batch  # each pair is flipped or not at random
    assert (permuted_count > 0) == (mode == "flip-and-colour")
    assert torch.equal(source, index.reshape(batch, views, 3, height, width))  # the inputs are left as they were
    unchanged = augment_pairs(source, target, "none", torch.Generator().manual_seed(0))
    assert unchanged[0] is source and unchanged[1] is target
