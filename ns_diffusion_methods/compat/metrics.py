"""Metrics whose backbone weights may be missing on an offline machine.

torchmetrics' LPIPS downloads torchvision's AlexNet/VGG/SqueezeNet weights when it is built, and nerfacto and
splatfacto build it in their constructors: offline, *constructing* those models fails with ``URLError``. Here a metric
whose weights cannot be obtained becomes an :class:`UnavailableMetric`: it returns NaN, one warning says how to
provide the weights, and :func:`drop_unavailable` removes it from every result nerfstudio reports (``ns-eval`` JSON,
in-training evaluation). A metric is never replaced by a made-up number. When the weights are present (a filled torch
hub cache, or internet access), the real metric is used unchanged.

:func:`install` applies this to stock nerfstudio models and to nerfstudio's pipelines (results are filtered).
nerfstudio's models import ``torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity`` inside their
``populate_modules``, so the only place to reach them is that name: it is rebound to :func:`lpips_metric`, which
returns the genuine torchmetrics metric whenever its weights can be obtained.
"""

from __future__ import annotations

import functools
import math
import os
import urllib.error
import warnings
from types import ModuleType
from typing import Any, Dict, Tuple

import torch
from torch import nn

from ns_diffusion_methods.compat.import_hooks import when_imported

#: metric key -> why it is unavailable and how to provide its weights
UNAVAILABLE: Dict[str, str] = {}

#: exceptions that mean "the weights could not be obtained" (no network, no cache, corrupt download)
WEIGHT_ERRORS: Tuple[type, ...] = (OSError, urllib.error.URLError, ConnectionError, RuntimeError, TimeoutError)

_LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


class MetricUnavailableWarning(UserWarning):
    """A metric is left out of the results because its weights cannot be obtained."""


class UnavailableMetric(nn.Module):
    """Stands in for a metric whose weights could not be obtained: returns NaN, which reporting drops."""

    available = False

    def __init__(self, name: str, reason: str) -> None:
        super().__init__()
        self.name = name
        self.reason = reason

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # noqa: D102
        return torch.tensor(float("nan"))

    def update(self, *args: Any, **kwargs: Any) -> None:  # torchmetrics-style use
        pass

    def compute(self) -> torch.Tensor:  # noqa: D102
        return torch.tensor(float("nan"))

    def reset(self) -> None:  # noqa: D102
        pass


def mark_unavailable(name: str, reason: str) -> UnavailableMetric:
    """Record ``name`` as unavailable, warn once, and return its stand-in."""
    if name not in UNAVAILABLE:
        UNAVAILABLE[name] = reason
        warnings.warn(f"Metric '{name}' is unavailable and left out of the results: {reason}", MetricUnavailableWarning,
                      stacklevel=3)
    return UnavailableMetric(name, reason)


def torch_hub_checkpoint_dir() -> str:
    """Where torchvision looks for (and downloads) backbone weights: ``$TORCH_HOME/hub/checkpoints``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def lpips_weights_hint(net_type: str) -> str:
    """The file torchvision needs for an LPIPS backbone and where to put it."""
    import torchvision.models as tvm

    weights = getattr(tvm, _LPIPS_BACKBONES.get(net_type, "AlexNet_Weights")).IMAGENET1K_V1
    filename = weights.url.rsplit("/", 1)[-1]
    return (f"torchvision could not obtain the {net_type} backbone weights '{filename}' ({weights.url}). "
            f"Offline, copy that file to {torch_hub_checkpoint_dir()}/ (or point TORCH_HOME at a folder holding "
            f"hub/checkpoints/{filename}).")


def lpips_metric(*args: Any, net_type: str = "alex", normalize: bool = False, **kwargs: Any) -> nn.Module:
    """torchmetrics' ``LearnedPerceptualImagePatchSimilarity``, or an :class:`UnavailableMetric` offline.

    Same arguments as the torchmetrics class (nerfstudio calls it with ``normalize=True``).
    """
    import torchmetrics.image.lpip  # noqa: F401  (its import hook records the genuine class)

    try:
        return _TORCHMETRICS_LPIPS(*args, net_type=net_type, normalize=normalize, **kwargs)
    except WEIGHT_ERRORS as err:
        return mark_unavailable("lpips", f"{lpips_weights_hint(net_type)} [{type(err).__name__}: {err}]")


_TORCHMETRICS_LPIPS: Any = None  # the genuine class, set by _patch_torchmetrics


def is_unavailable_value(key: str, value: Any) -> bool:
    """True for the NaN a stand-in produced for an unavailable metric (``lpips`` and ``lpips_std`` alike)."""
    base = key[:-4] if key.endswith("_std") else key
    if base not in UNAVAILABLE:
        return False
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def drop_unavailable(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """``metrics`` without the entries of unavailable metrics (in place, and returned)."""
    for key in [k for k, v in metrics.items() if is_unavailable_value(k, v)]:
        del metrics[key]
    return metrics


def _patch_torchmetrics(module: ModuleType) -> None:
    """Rebind ``LearnedPerceptualImagePatchSimilarity`` in torchmetrics' image modules to :func:`lpips_metric`."""
    global _TORCHMETRICS_LPIPS
    current = getattr(module, "LearnedPerceptualImagePatchSimilarity", None)
    if current is None or current is lpips_metric:
        return
    if _TORCHMETRICS_LPIPS is None:
        _TORCHMETRICS_LPIPS = current
    module.LearnedPerceptualImagePatchSimilarity = lpips_metric  # type: ignore[attr-defined]


def _filter_pipeline_results(module: ModuleType) -> None:
    """Wrap the result-producing methods of nerfstudio's pipelines so unavailable metrics are dropped."""
    cls = getattr(module, "VanillaPipeline", None)
    if cls is None or getattr(cls, "_ns_diffusion_filtered", False):
        return

    def wrap_dict(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            return drop_unavailable(fn(self, *args, **kwargs))

        return wrapper

    def wrap_pair(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            metrics, images = fn(self, *args, **kwargs)
            return drop_unavailable(metrics), images

        return wrapper

    for name in ("get_average_image_metrics", "get_average_eval_image_metrics"):
        if name in cls.__dict__:
            setattr(cls, name, wrap_dict(cls.__dict__[name]))
    if "get_eval_image_metrics_and_images" in cls.__dict__:
        cls.get_eval_image_metrics_and_images = wrap_pair(cls.__dict__["get_eval_image_metrics_and_images"])
    cls._ns_diffusion_filtered = True


def install() -> None:
    """Apply the offline-metric fixes to nerfstudio modules, now or when they are imported."""
    when_imported("torchmetrics.image.lpip", _patch_torchmetrics)
    when_imported("torchmetrics.image", _patch_torchmetrics)
    when_imported("nerfstudio.pipelines.base_pipeline", _filter_pipeline_results)
