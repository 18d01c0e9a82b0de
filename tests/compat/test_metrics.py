"""Offline LPIPS: unavailable (left out, one warning with the fix) without weights, the real metric with them, and
other errors never hidden as "unavailable"."""

import math
import warnings

import pytest
import torch

from ns_diffusion_methods.metrics import lpips as metrics


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(metrics, "UNAVAILABLE", {})


def test_lpips_without_weights_is_unavailable_with_one_warning(fresh_registry, torch_hub_dir):
    assert not (torch_hub_dir / "checkpoints" / "alexnet-owt-7be5be79.pth").exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = metrics.lpips_metric(normalize=True)
        second = metrics.lpips_metric(normalize=True)
    assert isinstance(first, metrics.UnavailableMetric) and isinstance(second, metrics.UnavailableMetric)
    messages = [str(w.message) for w in caught if issubclass(w.category, metrics.MetricUnavailableWarning)]
    assert len(messages) == 1
    assert "alexnet-owt-7be5be79.pth" in messages[0] and "hub/checkpoints" in messages[0]
    assert math.isnan(float(first(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))))


def test_drop_unavailable_removes_only_unavailable_nans(fresh_registry):
    metrics.mark_unavailable("lpips", "no weights")
    results = {"psnr": 20.0, "lpips": float("nan"), "lpips_std": float("nan"), "ssim": 0.5, "other": float("nan")}
    assert metrics.drop_unavailable(results) == {"psnr": 20.0, "ssim": 0.5, "other": results["other"]}


def test_lpips_with_weights_present_is_the_real_metric(fresh_registry, torch_hub_dir, monkeypatch):
    import torchvision
    weights_dir = torch_hub_dir / "checkpoints"
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)  # stands in for the real file
    try:
        metric = metrics.lpips_metric(normalize=True)
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        assert isinstance(metric, LearnedPerceptualImagePatchSimilarity)
        value = metric(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
        assert torch.isfinite(value)
        assert "lpips" not in metrics.UNAVAILABLE
    finally:
        path.unlink()


def test_stock_models_get_the_package_lpips_only_inside_the_block(fresh_registry):
    # nerfacto and splatfacto import the class inside populate_modules, from torchmetrics.image.lpip
    from torchmetrics.image import lpip

    genuine = lpip.LearnedPerceptualImagePatchSimilarity
    assert isinstance(genuine, type)
    with metrics.package_lpips_in_stock_models():
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        assert LearnedPerceptualImagePatchSimilarity is metrics.lpips_metric
        assert isinstance(LearnedPerceptualImagePatchSimilarity(normalize=True), metrics.UnavailableMetric)
    assert lpip.LearnedPerceptualImagePatchSimilarity is genuine


def test_errors_other_than_missing_weights_propagate(fresh_registry, monkeypatch):
    """A CUDA error (or any error that is not about obtaining weights) is never reported as "unavailable"."""
    from torchmetrics.image import lpip

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(lpip, "LearnedPerceptualImagePatchSimilarity", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        metrics.lpips_metric(normalize=True)
    assert "lpips" not in metrics.UNAVAILABLE
    assert metrics.weights_unavailable(RuntimeError("PytorchStreamReader failed reading zip archive"))
    assert not metrics.weights_unavailable(torch.cuda.OutOfMemoryError("CUDA out of memory"))
