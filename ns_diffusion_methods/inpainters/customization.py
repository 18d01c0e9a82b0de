"""Scene customisation of the inpainting LDM (MALD-NeRF), cached on disk.

MALD-NeRF tempers the diversity of the inpainting LDM by LoRA fine-tuning it on the scene itself, with a scene token
in the prompt ("a photo of sks scene"). The objective is the LDM's own self-supervised inpainting loss on the scene's
training images:

1. random square crops of the training images, resized first exactly as inpainting resizes them
   (:func:`~ns_diffusion_methods.inpainters.ldm.inference_size`: the frame's aspect, short side at the model's
   native size or the frame's own when smaller), so the LoRA learns the texture scale inference will show it;
2. random rectangles (sometimes the whole crop) as the inpainting mask: the UNet sees the crop with those pixels
   blanked, the mask, and a noised latent of the full crop;
3. the usual diffusion loss (noise or velocity MSE in latent space), **set to zero on every latent cell that touches
   the object mask**: the object is never learned, only the surroundings it must be replaced by;
4. LoRA (peft) on the UNet attention projections; the VAE and text encoder stay frozen.

The result is a LoRA folder (:mod:`ns_diffusion_methods.inpainters.lora`) under ``cache_dir``, named by a hash of
the images, the object masks, the base model, the prompt, the inference resolution and the settings: a second run on
the same data reuses it. ``ns-diffusion customize`` (:mod:`ns_diffusion_methods.inpainters.commands`) runs it on a
capture.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor

from ns_diffusion_methods.diffusion.untrained import TINY
from ns_diffusion_methods.inpainters.base import InpainterConfig
from ns_diffusion_methods.inpainters.ldm import CustomizationConfig, LDMInpainterConfig, resize_images, resize_masks
from ns_diffusion_methods.inpainters.lora import CONFIG_FILE, WEIGHTS_FILE, add_lora, load_lora, save_lora

#: bump when the same data and settings start producing a different LoRA (2: crops at the inference scale)
FORMAT_VERSION = 2
RECORD_FILE = "customization.json"
CONSOLE = Console(stderr=True)


def default_cache_dir() -> Path:
    """Where customisations are cached: ``$NS_DIFFUSION_CACHE/customization`` or ``~/.cache/ns-diffusion/...``."""
    root = os.environ.get("NS_DIFFUSION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ns-diffusion")
    return Path(root) / "customization"


# ---------------------------------------------------------------------------------------------------- pieces
def model_identity(model: str) -> str:
    """What identifies the base model in the cache key: the Hub id, ``tiny``, or a local folder's absolute path."""
    if model == TINY:
        return model
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def data_key(images: Tensor, object_masks: Tensor, config: LDMInpainterConfig) -> str:
    """SHA-256 of the data (8-bit images, mask bits), base model, prompt, inference resolution (the scale of the
    training crops) and customisation settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "format": FORMAT_VERSION,
        "model": model_identity(config.model),
        "prompt": config.prompt,
        "resolution": config.resolution,
        "settings": dataclasses.asdict(config.customization),
        "images": list(images.shape),
        "masks": list(object_masks.shape),
    }, sort_keys=True).encode())
    digest.update((images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().tobytes())
    digest.update(np.packbits(object_masks.detach().bool().cpu().numpy()).tobytes())
    return digest.hexdigest()


def random_rectangles(batch: int, size: int, settings: CustomizationConfig, generator: torch.Generator) -> Tensor:
    """Random rectangle inpainting masks ``[B, 1, size, size]`` bool (True = to fill).

    Each mask is the union of 1 to ``max_rectangles`` axis-aligned rectangles whose sides are uniform fractions of
    ``size`` in ``rectangle_size``; with probability ``mask_everything_probability`` the whole crop is masked.
    """
    low, high = settings.rectangle_size
    masks = torch.zeros(batch, 1, size, size, dtype=torch.bool)

    def uniform() -> float:
        return float(torch.rand((), generator=generator))

    for b in range(batch):
        if uniform() < settings.mask_everything_probability:
            masks[b] = True
            continue
        count = 1 + int(torch.randint(settings.max_rectangles, (), generator=generator))
        for _ in range(count):
            height = max(1, round(size * (low + (high - low) * uniform())))
            width = max(1, round(size * (low + (high - low) * uniform())))
            top = int(torch.randint(size - height + 1, (), generator=generator))
            left = int(torch.randint(size - width + 1, (), generator=generator))
            masks[b, :, top:top + height, left:left + width] = True
    return masks


def crop_side(image_size: Sequence[int], crop_size: Optional[int], multiple: int) -> int:
    """Side of the square customisation crops from images of ``image_size`` (already at inference size).

    ``crop_size`` (default: the short side) rounded down to a multiple of ``multiple``, at most the short side.
    """
    short = min(image_size)
    side = short if crop_size is None else min(int(crop_size), short)
    return max(multiple, side // multiple * multiple)


def random_crops(images: Tensor, object_masks: Tensor, new_size: Sequence[int], size: int,
                 generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Resize to ``new_size`` (as inpainting does), then randomly crop ``size x size`` from images and object masks.

    Args:
        images: ``[B, 3, H, W]`` in [0, 1].
        object_masks: ``[B, 1, H, W]`` bool.
        new_size: ``(h, w)``, the images' inference size (``LatentInpainter.inference_size``).
        size: side of the crops, at most ``min(new_size)``.

    Returns:
        ``(crops [B, 3, size, size], object crops [B, 1, size, size] bool)``; a resized mask pixel touching the
        object counts as object.
    """
    new_size = (int(new_size[0]), int(new_size[1]))
    if not 1 <= size <= min(new_size):
        raise ValueError(f"The crop side must be in [1, {min(new_size)}] for images resized to {new_size}, but got "
                         f"{size}.")
    resized = resize_images(images.float(), new_size)
    masks = resize_masks(object_masks, new_size)
    crops, crop_masks = [], []
    for b in range(images.shape[0]):
        top = int(torch.randint(new_size[0] - size + 1, (), generator=generator))
        left = int(torch.randint(new_size[1] - size + 1, (), generator=generator))
        crops.append(resized[b, :, top:top + size, left:left + size])
        crop_masks.append(masks[b, :, top:top + size, left:left + size])
    return torch.stack(crops), torch.stack(crop_masks)


def latent_weights(object_masks: Tensor, latent_size: Sequence[int]) -> Tensor:
    """Loss weights ``[B, 1, h, w]`` on the latent grid: 0 on every cell that touches the object, else 1."""
    touched = F.adaptive_max_pool2d(object_masks.float(), output_size=tuple(latent_size))
    return 1.0 - touched


def masked_diffusion_loss(prediction: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Mean squared error over the latent cells with weight 1 (weights broadcast over channels)."""
    weights = weights.expand_as(prediction).to(prediction.dtype)
    squared = (prediction.float() - target.float()).pow(2) * weights
    return squared.sum() / weights.sum().clamp(min=1.0)


def diffusion_target(scheduler: Any, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """What the UNet predicts: the noise (epsilon models, SD-2-inpainting) or the velocity (v models)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"Scene customisation supports epsilon and v_prediction models, but the scheduler predicts "
                     f"{kind!r}.")


def training_crops(inpainter: Any, images: Tensor, object_masks: Tensor, settings: CustomizationConfig,
                   generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """``settings.batch_size`` random crops of random training images and their object masks, at inference scale.

    The images are resized to ``inpainter.inference_size`` (the size inpainting resizes them to, with the same
    filter) before cropping, so the LoRA learns the scale and sharpness of texture that inference shows it.
    """
    new_size = inpainter.inference_size(*images.shape[-2:])
    size = crop_side(new_size, settings.crop_size, inpainter.size_multiple)
    index = torch.randint(images.shape[0], (settings.batch_size,), generator=generator)
    return random_crops(images[index], object_masks[index], new_size, size, generator)


def training_batch(inpainter: Any, images: Tensor, object_masks: Tensor, settings: CustomizationConfig,
                   generator: torch.Generator) -> Dict[str, Tensor]:
    """One customisation batch: UNet inputs, the diffusion target and the latent loss weights (no gradients)."""
    crops, object_crops = training_crops(inpainter, images, object_masks, settings, generator)
    size = crops.shape[-1]
    rectangles = random_rectangles(settings.batch_size, size, settings, generator)
    device = inpainter.device
    pixels = crops.to(device) * 2 - 1
    with torch.no_grad():
        latents = inpainter.encode_images(pixels, sample=True, generator=None).float()
        latent_masks, masked_latents = inpainter.conditioning(pixels, rectangles.to(device))
    scheduler = inpainter.scheduler
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (settings.batch_size,), generator=generator)
    timesteps = timesteps.to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    return {
        "noisy": scheduler.add_noise(latents, noise, timesteps),
        "timesteps": timesteps,
        "latent_masks": latent_masks,
        "masked_latents": masked_latents,
        "target": diffusion_target(scheduler, latents, noise, timesteps),
        "weights": latent_weights(object_crops.to(device), latents.shape[-2:]),
    }


def batch_loss(inpainter: Any, batch: Dict[str, Tensor], prompt: str) -> Tensor:
    """The masked diffusion loss of the inpainter's UNet on ``batch`` (differentiable in its LoRA weights)."""
    embeddings = inpainter.encode_prompt(prompt).expand(batch["noisy"].shape[0], -1, -1)
    prediction = inpainter.predict_noise(batch["noisy"], batch["timesteps"], batch["latent_masks"],
                                         batch["masked_latents"], embeddings)
    return masked_diffusion_loss(prediction, batch["target"], batch["weights"])


# ---------------------------------------------------------------------------------------------------- training
def _check(images: Tensor, object_masks: Tensor, settings: CustomizationConfig) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"`images` must be [N, 3, H, W] with N >= 1, but got shape {tuple(images.shape)}.")
    expected = (images.shape[0], 1, *images.shape[-2:])
    if tuple(object_masks.shape) != expected:
        raise ValueError(f"`object_masks` must be [N, 1, H, W] = {expected}, but got {tuple(object_masks.shape)}.")
    for name in ("steps", "batch_size", "max_rectangles", "rank"):
        if getattr(settings, name) < 1:
            raise ValueError(f"`customization.{name}` must be >= 1, but got {getattr(settings, name)}.")
    if settings.crop_size is not None and settings.crop_size < 1:
        raise ValueError(f"`customization.crop_size` must be >= 1, but got {settings.crop_size}.")
    low, high = settings.rectangle_size
    if not 0 < low <= high <= 1:
        raise ValueError(f"`customization.rectangle_size` must satisfy 0 < low <= high <= 1, but got {(low, high)}.")


def _is_cached(folder: Path, key: str) -> bool:
    if not all((folder / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE, RECORD_FILE)):
        return False
    try:
        return json.loads((folder / RECORD_FILE).read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def train_lora(inpainter: Any, images: Tensor, object_masks: Tensor, config: LDMInpainterConfig,
               console: Optional[Console] = None,
               on_step: Optional[Callable[[int, float], None]] = None) -> List[float]:
    """Add a LoRA adapter to ``inpainter.unet`` and fit it; returns the loss of every step.

    The adapter stays in the UNet, frozen, when this returns (the inpainter is customised in place). ``on_step(step,
    loss)`` is called after every optimisation step (a training run logs the loss curve with it).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    settings = config.customization
    unet = inpainter.unet
    add_lora(unet, rank=settings.rank, alpha=settings.alpha)
    lora_params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for param in lora_params:  # trained in float32 even on a float16 UNet (peft casts activations)
        param.data = param.data.float()
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(lora_params, lr=settings.learning_rate, weight_decay=1e-2)
    scaler = torch.amp.GradScaler("cuda", enabled=inpainter.dtype == torch.float16 and inpainter.device.type == "cuda")
    generator = torch.Generator().manual_seed(settings.seed)
    images, object_masks = images.detach().float().cpu(), object_masks.detach().bool().cpu()
    losses: List[float] = []
    columns = (TextColumn("[bold]Customising the inpainter[/bold]"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
    with Progress(*columns, console=console or CONSOLE, transient=False) as progress:
        task = progress.add_task("customize", total=settings.steps, loss=float("nan"))
        for _ in range(settings.steps):
            batch = training_batch(inpainter, images, object_masks, settings, generator)
            loss = batch_loss(inpainter, batch, config.prompt)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(len(losses) - 1, losses[-1])
            progress.update(task, advance=1, loss=losses[-1])
    for param in lora_params:
        param.requires_grad_(False)
    return losses


def cache_folder(images: Tensor, object_masks: Tensor, config: LDMInpainterConfig,
                 cache_dir: Union[str, Path, None] = None) -> Tuple[Path, str]:
    """Where the customisation of ``config`` on this data is cached, and its full key."""
    key = data_key(images, object_masks, config)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache_dir / key[:20], key


def cached_lora(images: Tensor, object_masks: Tensor, config: LDMInpainterConfig,
                cache_dir: Union[str, Path, None] = None) -> Optional[Path]:
    """The cached LoRA folder of this data and ``config``, or None when customisation would have to train."""
    folder, key = cache_folder(images, object_masks, config, cache_dir)
    return folder if _is_cached(folder, key) else None


def customize(
    images: Tensor,
    object_masks: Tensor,
    config: InpainterConfig,
    cache_dir: Union[str, Path, None] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    inpainter: Any = None,
    console: Optional[Console] = None,
    model_flag: str = "--pipeline.inpainter.model",
    on_step: Optional[Callable[[int, float], None]] = None,
) -> Optional[Path]:
    """LoRA-customise ``config.model`` on a scene, or reuse the cached result; returns the LoRA folder.

    Args:
        images: ``[N, 3, H, W]`` in [0, 1], the scene's training images (with the object).
        object_masks: ``[N, 1, H, W]`` bool, True = object (its pixels never contribute to the loss).
        config: the inpainter config (an :class:`~ns_diffusion_methods.inpainters.ldm.LDMInpainterConfig`): base
            model, prompt (with the scene token) and ``config.customization``.
        cache_dir: folder of cached customisations; default :func:`default_cache_dir`.
        device: where to train when ``inpainter`` is not given.
        inpainter: an already-built :class:`~ns_diffusion_methods.inpainters.ldm.LatentInpainter` of ``config``
            without LoRA: it is customised in place (trained, or the cached adapter loaded into it), which saves
            loading the model twice. When None, a base inpainter is built and discarded.
        console: where the progress bar and messages go.
        model_flag: the flag named when the base model cannot be found.
        on_step: called as ``on_step(step, loss)`` after every optimisation step when it trains.

    Returns:
        The LoRA folder (set it as ``config.lora_path``), or None for a backend that cannot be customised
        (no weights: OpenCV, oracle; a message says so).
    """
    console = console or CONSOLE
    if not isinstance(config, LDMInpainterConfig):
        console.print(f"[yellow]Scene customisation skipped: the {config.summary()} inpainter has no weights to "
                      f"customise.[/yellow]")
        return None
    settings = config.customization
    _check(images, object_masks, settings)
    folder, key = cache_folder(images, object_masks, config, cache_dir)
    cache_dir = folder.parent
    if _is_cached(folder, key):
        console.print(f"Scene customisation: reusing the cached LoRA {folder}")
        if inpainter is not None:
            load_lora(inpainter.unet, folder)
            inpainter.unet.requires_grad_(False)
        return folder

    if inpainter is None:
        inpainter = dataclasses.replace(config, lora_path=None).setup(device=device, flag=model_flag)
    elif getattr(inpainter.unet, "_hf_peft_config_loaded", False):
        raise ValueError("The `inpainter` passed to customize() already holds a LoRA adapter; pass one built "
                         "without `lora_path`.")
    console.print(f"Scene customisation of {config.model} on {images.shape[0]} images "
                  f"({settings.steps} steps, LoRA rank {settings.rank}, prompt '{config.prompt}')")
    losses = train_lora(inpainter, images, object_masks, config, console=console, on_step=on_step)

    # write next to the final folder, then rename: an interrupted run never leaves a half-written cache entry
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key[:20]}-", dir=cache_dir))
    try:
        save_lora(inpainter.unet, staging)
        window = losses[-min(len(losses), 50):]
        record = {"key": key, "format": FORMAT_VERSION, "model": config.model, "prompt": config.prompt,
                  "resolution": config.resolution, "settings": dataclasses.asdict(settings),
                  "num_images": int(images.shape[0]), "image_size": list(images.shape[-2:]),
                  "training_image_size": list(inpainter.inference_size(*images.shape[-2:])),
                  "final_loss": sum(window) / len(window)}
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2))
        if folder.exists():  # a stale or corrupt entry under the same name
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    console.print(f"Scene customisation saved to {folder}")
    return folder


# ---------------------------------------------------------------------------------------------------- captures
def _training_frames(data: Path) -> List[Dict[str, Any]]:
    """The training frames of a nerfstudio capture, as ``object-mask-data`` splits it: ``train_filenames`` if listed,
    else every frame not named as an object-free evaluation view (``eval`` in its name)."""
    from ns_diffusion_methods.data.object_mask_data import is_evaluation_name
    from ns_diffusion_methods.errors import DataError

    transforms = data / "transforms.json"
    if not transforms.is_file():
        raise DataError(f"{transforms} does not exist: `--data` must be a nerfstudio capture folder whose "
                        f"transforms.json lists frames with `object_mask_path`.")
    meta = json.loads(transforms.read_text())
    frames = list(meta.get("frames", []))
    if "train_filenames" in meta:
        names = {os.path.normpath(name) for name in meta["train_filenames"]}
        frames = [f for f in frames if os.path.normpath(f["file_path"]) in names]
    else:
        frames = [f for f in frames if not is_evaluation_name(f["file_path"])]
    if not frames:
        raise DataError(f"{transforms} lists no training frames.")
    return frames


def read_capture(data: Path, dilation: Tuple[int, int] = (0, 0)) -> Tuple[Tensor, Tensor]:
    """Training images ``[N, 3, H, W]`` and object masks ``[N, 1, H, W]`` of a nerfstudio capture.

    Frames name their object mask under ``object_mask_path`` (255 = object). Masks are validated first (every image
    has one, same size, neither empty nor full), with one error naming every bad file.
    """
    from ns_diffusion_methods.data.images import load_image
    from ns_diffusion_methods.data.masks import load_object_mask, validate_object_masks

    frames = _training_frames(data)
    pairs = [(data / f["file_path"], data / f["object_mask_path"] if "object_mask_path" in f else None)
             for f in frames]
    validate_object_masks(pairs, dilation=dilation, split="training",
                          hint="Give every training frame an `object_mask_path` (255 = object to remove).")
    images, masks = [], []
    for image_path, mask_path in pairs:
        image = load_image(image_path)  # [3, H, W]
        images.append(image)
        masks.append(torch.from_numpy(load_object_mask(mask_path, image.shape[1], image.shape[2], dilation))[None])
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        from ns_diffusion_methods.errors import DataError

        raise DataError(f"The training images of {data} have different sizes {sorted(sizes)}; customisation needs "
                        f"one size.")
    return torch.stack(images), torch.stack(masks)
