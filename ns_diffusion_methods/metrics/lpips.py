"""Metrics whose backbone weights may be missing on an offline machine: built through the package's factory.

torchmetrics' LPIPS downloads torchvision's AlexNet/VGG/SqueezeNet weights when it is built, and FID/KID the
Inception-v3 weights. Offline, with an empty torch hub cache, building them fails. The package never makes up a
number for them: a metric whose weights cannot be obtained becomes an :class:`UnavailableMetric` (it returns NaN),
one warning says which file to provide and where, and :func:`drop_unavailable` removes its entries from the results
(``ns-eval`` JSON, in-training evaluation). When the weights are present (a filled torch hub cache, or internet
access), the genuine torchmetrics metric is returned unchanged.

Only a failure to *obtain* the weights makes a metric unavailable (:func:`weights_unavailable`: no network, no cached
file, a truncated download); any other error (CUDA, out of memory, a wrong argument) propagates with its traceback.

Two ways in:

- :func:`lpips_metric`, the factory the package's own code calls;
- :func:`package_lpips_in_stock_models`, a context manager for the one place the package cannot call the factory
  itself: nerfstudio's nerfacto and splatfacto build LPIPS inside their ``populate_modules``, importing the class
  from ``torchmetrics.image.lpip`` there. The package's models built on them (mald-nerf, difix3d), and the stock
  models its benchmark runner trains, run their construction inside this context, which points that name at
  :func:`lpips_metric` and restores torchmetrics' class on exit. Nothing is changed outside such a block.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import urllib.error
import warnings
from typing import Any, Dict, Iterator, Tuple

import torch
from torch import nn

#: metric key -> why it is unavailable and how to provide its weights
UNAVAILABLE: Dict[str, str] = {}

#: errors that mean "the weights could not be downloaded" (no network, unknown host, refused, timed out)
DOWNLOAD_ERRORS: Tuple[type, ...] = (urllib.error.URLError, ConnectionError, TimeoutError)

#: messages of torch's loader for a truncated or corrupt weights file (an interrupted download)
CORRUPT_FILE_MESSAGES: Tuple[str, ...] = ("PytorchStreamReader failed", "failed finding central directory",
                                          "invalid hash value", "unexpected EOF", "Ran out of input")

_LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def weights_unavailable(error: BaseException) -> bool:
    """Whether ``error``, raised while a metric was built, means its pretrained weights could not be obtained.

    True for download failures (:data:`DOWNLOAD_ERRORS`) and for torch's errors on a truncated or corrupt weights
    file; False for everything else (a CUDA error, out of memory, a bad argument), which must not be hidden.
    """
    if isinstance(error, DOWNLOAD_ERRORS):
        return True
    return isinstance(error, (RuntimeError, EOFError)) and any(m in str(error) for m in CORRUPT_FILE_MESSAGES)


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


def _torchmetrics_lpips() -> type:
    """torchmetrics' own ``LearnedPerceptualImagePatchSimilarity`` class (also while a stock model is being built
    inside :func:`package_lpips_in_stock_models`)."""
    from torchmetrics.image import lpip

    return _GENUINE.get("class") or lpip.LearnedPerceptualImagePatchSimilarity


def lpips_metric(*args: Any, net_type: str = "alex", normalize: bool = False, **kwargs: Any) -> nn.Module:
    """torchmetrics' ``LearnedPerceptualImagePatchSimilarity``, or an :class:`UnavailableMetric` when its backbone
    weights cannot be obtained (see the module docstring).

    Same arguments as the torchmetrics class (nerfstudio builds it with ``normalize=True``).
    """
    try:
        return _torchmetrics_lpips()(*args, net_type=net_type, normalize=normalize, **kwargs)
    except Exception as err:  # noqa: BLE001 - classified below; everything else is re-raised
        if not weights_unavailable(err):
            raise
        return mark_unavailable("lpips", f"{lpips_weights_hint(net_type)} [{type(err).__name__}: {err}]")


#: the genuine class while the name is pointed at the factory; one block at a time (construction is synchronous)
_GENUINE: Dict[str, Any] = {}
_SWAP_LOCK = threading.RLock()


@contextlib.contextmanager
def package_lpips_in_stock_models() -> Iterator[None]:
    """Inside the block, nerfstudio models that build LPIPS in ``populate_modules`` (nerfacto, splatfacto) get
    :func:`lpips_metric`'s result: the genuine metric, or an :class:`UnavailableMetric` offline. On exit
    ``torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity`` is torchmetrics' class again."""
    from torchmetrics.image import lpip

    with _SWAP_LOCK:
        if _GENUINE:  # nested: the outer block already swapped
            yield
            return
        genuine = lpip.LearnedPerceptualImagePatchSimilarity
        _GENUINE["class"] = genuine
        lpip.LearnedPerceptualImagePatchSimilarity = lpips_metric  # type: ignore[misc,assignment]
        try:
            yield
        finally:
            lpip.LearnedPerceptualImagePatchSimilarity = genuine  # type: ignore[misc]
            _GENUINE.clear()


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
