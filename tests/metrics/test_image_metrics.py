"""Image metrics against hand computations; M-LPIPS preprocessing with a random-weight LPIPS network; FID/KID."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ns_diffusion_methods.metrics import (
    FidKid,
    blackout_outside,
    kid_subset_size,
    m_lpips_bbox,
    m_lpips_blackout,
    mask_bbox,
    mask_sharpness,
    masked_psnr,
    object_removal_metrics,
    psnr,
    psnr_from_mse,
    psnr_per_image,
    skimage_ssim,
    ssim,
)
from ns_diffusion_methods.metrics import lpips as compat_metrics
from ns_diffusion_methods.metrics.image import INCEPTION_URL, inception_weights_hint
from ns_diffusion_methods.metrics.lpips import UnavailableMetric, drop_unavailable


@pytest.fixture(scope="module")
def fake_lpips():
    """torchmetrics' LPIPS network with a random-weight AlexNet backbone (built explicitly; nothing downloaded)."""
    from torchmetrics.functional.image.lpips import _LPIPS

    torch.manual_seed(0)
    net = _LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()

    def distance(a, b):
        with torch.no_grad():
            return net(a, b, normalize=True).mean()

    return distance


def _pair(seed=0, size=(48, 64)):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, *size, generator=generator), torch.rand(2, 3, *size, generator=generator)


def test_psnr_and_ssim_full_frame():
    target = torch.full((1, 3, 16, 16), 0.5)
    assert psnr(target + 0.1, target).item() == pytest.approx(20.0, abs=1e-4)
    assert ssim(target, target).item() == pytest.approx(1.0, abs=1e-6)


def test_psnr_from_mse_hand_values_clamp_and_data_range():
    assert psnr_from_mse(torch.tensor(0.01)).item() == pytest.approx(20.0, abs=1e-5)
    assert psnr_from_mse(torch.tensor(0.0)).item() == pytest.approx(100.0, abs=1e-4)  # clamped at 1e-10
    # images in [-1, 1] have 4x the squared error of the same images in [0, 1]: same PSNR
    assert psnr_from_mse(torch.tensor(0.04), data_range=2.0).item() == pytest.approx(20.0, abs=1e-5)
    # bit-identical to the formula the methods used before (training logs and ns-eval results stay the same)
    mse = torch.rand(5, generator=torch.Generator().manual_seed(0)) * 1e-3
    assert torch.equal(psnr_from_mse(mse), -10.0 * torch.log10(mse.clamp_min(1e-10)))
    assert torch.equal(psnr_from_mse(mse, data_range=2.0), -10 * torch.log10((mse / 4).clamp_min(1e-10)))


def test_psnr_per_image_whole_and_masked():
    target = torch.zeros(2, 3, 4, 4)
    rendered = target.clone()
    rendered[0] += 0.1  # MSE 0.01: 20 dB
    rendered[1, :, :2] += 0.01  # MSE 0.0001 on the top half: 40 dB there, 43.01 dB over the image
    assert psnr_per_image(rendered, target).tolist() == pytest.approx([20.0, 10 * math.log10(2e4)], abs=1e-4)
    top = torch.zeros(1, 1, 4, 4)
    top[..., :2, :] = 1
    assert psnr_per_image(rendered, target, top).tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    assert psnr_per_image(rendered, target, torch.zeros(1, 1, 4, 4)).tolist() == pytest.approx([100.0, 100.0])
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        psnr_per_image(rendered[0], target[0])


def test_ssim_per_image_and_skimage_variant():
    rendered, target = _pair(3, size=(32, 32))
    per_image = ssim(rendered, target, reduction="none")
    assert per_image.shape == (2,)
    torch.testing.assert_close(per_image.mean(), ssim(rendered, target))
    assert ssim(target, target, reduction="none").tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    # scikit-image's SSIM (the SSDNeRF / PixelNeRF protocol) is a different window: 1 for equal images, and not the
    # torchmetrics value for different ones
    image, other = rendered[0].permute(1, 2, 0), target[0].permute(1, 2, 0)
    assert skimage_ssim(image, image) == pytest.approx(1.0)
    from skimage.metrics import structural_similarity

    assert skimage_ssim(image, other) == structural_similarity(image.numpy(), other.numpy(), data_range=1.0,
                                                               channel_axis=-1)
    assert abs(skimage_ssim(image, other) - float(per_image[0])) > 1e-4


def test_masked_psnr_against_hand_values():
    target = torch.zeros(2, 3, 4, 4)
    rendered = torch.full((2, 3, 4, 4), 0.5)  # outside the mask: far off, must not count
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    masks[0, 0, 1:3, 1:3] = True
    rendered[0, :, 1:3, 1:3] = 0.1  # MSE 0.01 inside -> 20 dB
    masks[1, 0, 0, 0] = True
    rendered[1, 0, 0, 0] = 0.1  # channels 0.1, 0.5, 0.5 -> MSE 0.17 -> 7.6955 dB
    values = masked_psnr(rendered, target, masks, reduction="none")
    assert values[0].item() == pytest.approx(20.0, abs=1e-4)
    assert values[1].item() == pytest.approx(-10 * math.log10((0.01 + 0.25 + 0.25) / 3), abs=1e-4)
    masks[1] = False  # an empty mask: NaN, skipped by the mean
    values = masked_psnr(rendered, target, masks, reduction="none")
    assert math.isnan(values[1].item())
    assert masked_psnr(rendered, target, masks).item() == pytest.approx(20.0, abs=1e-4)


def test_mask_bbox():
    mask = torch.zeros(20, 30, dtype=torch.bool)
    mask[4, 10] = mask[13, 5] = mask[8, 21] = True
    assert mask_bbox(mask) == (4, 14, 5, 22)
    assert mask_bbox(mask, expand=0.1) == (3, 15, 3, 24)  # grows by round(0.1 * 10) = 1 and round(0.1 * 17) = 2
    assert mask_bbox(mask, expand=1.0) == (0, 20, 0, 30)  # clipped to the image
    assert mask_bbox(torch.zeros(1, 5, 5)) is None


def test_m_lpips_blackout_preprocessing(fake_lpips):
    rendered, target = _pair()
    masks = torch.zeros(2, 1, 48, 64, dtype=torch.bool)
    masks[:, :, 10:30, 20:50] = True
    value = m_lpips_blackout(rendered, target, masks, fake_lpips, reduction="none")
    for i in range(2):
        expected = fake_lpips(blackout_outside(rendered[i:i + 1], masks[i:i + 1]),
                              blackout_outside(target[i:i + 1], masks[i:i + 1]))
        assert value[i].item() == pytest.approx(expected.item(), rel=1e-6)
    # pixels outside the mask are irrelevant; pixels inside are not
    changed = rendered.clone()
    changed[~masks.expand_as(rendered)] = torch.rand(int((~masks).sum()) * 3)
    assert torch.allclose(m_lpips_blackout(changed, target, masks, fake_lpips, reduction="none"), value)
    changed[:, :, 15, 30] += 0.5
    assert not torch.allclose(m_lpips_blackout(changed.clamp(0, 1), target, masks, fake_lpips, reduction="none"),
                              value)


def test_m_lpips_bbox_preprocessing(fake_lpips):
    rendered, target = _pair(1)
    masks = torch.zeros(2, 1, 48, 64, dtype=torch.bool)
    masks[0, :, 5:45, 8:60] = True  # 40 x 52 box: cropped, no resizing
    masks[0, :, 20:25, 20:25] = False  # a hole in the mask: still inside the box
    masks[1, :, 30:40, 2:14] = True  # 10 x 12 box: upsampled to a 32 px shorter side
    value = m_lpips_bbox(rendered, target, masks, fake_lpips, reduction="none")
    expected0 = fake_lpips(rendered[:1, :, 5:45, 8:60], target[:1, :, 5:45, 8:60])
    assert value[0].item() == pytest.approx(expected0.item(), rel=1e-6)
    up = dict(size=(32, 38), mode="bilinear", align_corners=False)
    expected1 = fake_lpips(F.interpolate(rendered[1:, :, 30:40, 2:14], **up),
                           F.interpolate(target[1:, :, 30:40, 2:14], **up))
    assert value[1].item() == pytest.approx(expected1.item(), rel=1e-6)
    # outside the box: irrelevant; inside the box but outside the mask (the hole): counts, unlike the blackout variant
    changed = rendered.clone()
    changed[0, :, 0:5] = 0.0
    assert m_lpips_bbox(changed, target, masks, fake_lpips, reduction="none")[0].item() == pytest.approx(
        value[0].item(), rel=1e-6)
    changed[0, :, 20:25, 20:25] = 1.0
    assert m_lpips_bbox(changed, target, masks, fake_lpips, reduction="none")[0].item() != pytest.approx(
        value[0].item(), rel=1e-6)
    assert m_lpips_blackout(changed, target, masks, fake_lpips, reduction="none")[0].item() == pytest.approx(
        m_lpips_blackout(rendered, target, masks, fake_lpips, reduction="none")[0].item(), rel=1e-6)


def test_mask_sharpness():
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float()  # 0/1 checkerboard
    images = checker.expand(1, 3, 8, 8).clone()
    masks = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks[..., 1:7, 1:7] = True  # eroded: the 4 x 4 centre, 8 pixels of each colour
    # the Laplacian of a 0/255 checkerboard is +-4 * 255 everywhere: variance 1020^2
    assert mask_sharpness(images, masks).item() == pytest.approx(1020.0 ** 2, rel=1e-6)
    # flat inside, a different flat outside: the mask border adds nothing
    flat = torch.zeros(1, 3, 8, 8)
    flat[~masks.expand_as(flat)] = 1.0
    assert mask_sharpness(flat, masks).item() == pytest.approx(0.0, abs=1e-6)
    # blurring lowers it
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = F.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)
    full = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    assert mask_sharpness(blurred, full).item() < 0.5 * mask_sharpness(noise, full).item()


def test_object_removal_metrics_keys(fake_lpips):
    rendered, target = _pair(2)
    masks = torch.zeros(2, 1, 48, 64, dtype=torch.bool)
    masks[:, :, 10:30, 20:50] = True
    with_lpips = object_removal_metrics(rendered[:1], target[:1], masks[:1], lpips=fake_lpips)
    assert set(with_lpips) == {"psnr", "ssim", "lpips", "masked_psnr", "m_lpips", "m_lpips_bbox", "mask_sharpness",
                               "mask_sharpness_gt"}
    offline = object_removal_metrics(rendered[:1], target[:1], masks[:1], lpips=UnavailableMetric("lpips", "test"))
    assert set(offline) == {"psnr", "ssim", "masked_psnr", "mask_sharpness", "mask_sharpness_gt"}
    empty = object_removal_metrics(rendered[:1], target[:1], torch.zeros_like(masks[:1]), lpips=fake_lpips)
    assert set(empty) == {"psnr", "ssim", "lpips"}


class _RandomFeatures(nn.Module):
    """A random-weight feature network taking uint8 images, like torchmetrics' Inception wrapper."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, stride=2)

    def forward(self, images):
        x = images.float() / 255.0
        return F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)


def test_kid_subset_size_is_clamped_to_the_number_of_images():
    assert kid_subset_size(1000, 40) == 40
    assert kid_subset_size(20, 40) == 20
    generator = torch.Generator().manual_seed(0)
    rendered = torch.rand(5, 3, 16, 16, generator=generator)
    target = torch.rand(5, 3, 16, 16, generator=generator)
    metric = FidKid(feature=_RandomFeatures(), kid_subset_size=1000, kid_subsets=3)
    metric.update(rendered[:3], target[:3])
    metric.update(rendered[3:], target[3:])
    same = FidKid(feature=_RandomFeatures(), kid_subset_size=1000, kid_subsets=3)
    same.update(target, target)
    values, zero = metric.compute(), same.compute()
    # every KID subset is the whole set: no spread to report (a kid_std of 0 would claim a certain value)
    assert set(values) == {"fid", "kid"} and metric.kid.subset_size == 5
    # identical sets: FID 0; KID's unbiased estimate is 0 up to the diagonal terms of the cross kernel
    assert zero["fid"] == pytest.approx(0.0, abs=1e-3) and abs(zero["kid"]) < 1e-3
    assert values["fid"] > zero["fid"] + 1e-3 and values["kid"] > zero["kid"]
    with pytest.raises(ValueError, match="at least 2 images"):
        single = FidKid(feature=_RandomFeatures())
        single.update(rendered[:1], target[:1])
        single.compute()


def test_kid_std_comes_from_subsets_smaller_than_the_set():
    generator = torch.Generator().manual_seed(1)
    rendered = torch.rand(8, 3, 16, 16, generator=generator)
    target = torch.rand(8, 3, 16, 16, generator=generator) * 0.5
    metric = FidKid(feature=_RandomFeatures(), kid_subset_size=4, kid_subsets=20)
    metric.update(rendered, target)
    values = metric.compute()
    assert metric.kid.subset_size == 4 and values["kid_std"] > 0
    # the whole set (subset size clamped to 8) gives the same kind of estimate, with no spread reported
    whole = FidKid(feature=_RandomFeatures(), kid_subset_size=1000, kid_subsets=20)
    whole.update(rendered, target)
    whole_values = whole.compute()
    assert "kid_std" not in whole_values
    assert abs(values["kid"] - whole_values["kid"]) < 3 * values["kid_std"] + 1e-6


@pytest.fixture
def clean_unavailable():
    saved = dict(compat_metrics.UNAVAILABLE)
    for key in ("fid", "kid"):
        compat_metrics.UNAVAILABLE.pop(key, None)
    yield
    compat_metrics.UNAVAILABLE.clear()
    compat_metrics.UNAVAILABLE.update(saved)


def test_fid_kid_unavailable_offline_with_one_warning_naming_the_weights(clean_unavailable, torch_hub_dir):
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert INCEPTION_URL == URL_INCEPTION_V3  # the hint names the file torch-fidelity actually loads
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric = FidKid()
        FidKid()
    messages = [str(w.message) for w in caught if issubclass(w.category, compat_metrics.MetricUnavailableWarning)]
    assert len(messages) == 1
    assert "weights-inception-2015-12-05-6726825d.pth" in messages[0]
    assert compat_metrics.torch_hub_checkpoint_dir() in messages[0]
    assert compat_metrics.torch_hub_checkpoint_dir().startswith(str(torch_hub_dir))  # the tests' private cache
    assert not metric.available
    metric.update(*_pair())
    assert metric.compute() == {}
    reported = {"psnr": 20.0, "fid": float("nan"), "kid": float("nan"), "kid_std": float("nan")}
    assert drop_unavailable(reported) == {"psnr": 20.0}
    assert "hub/checkpoints/weights-inception-2015-12-05-6726825d.pth" in inception_weights_hint()
