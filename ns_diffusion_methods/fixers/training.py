"""Fine-tuning a Difix fixer on (degraded render, clean image[, reference]) pairs: ``ns-diffusion train-fixer``.

The recipe of Difix3D+ (``src/train_difix.py``; paper section 4 where stated):

- trainable: the whole UNet, the VAE-decoder LoRA and the 4 skip convolutions; frozen: the VAE encoder, the rest of
  the decoder and the text embedding (:meth:`DifixModel.trainable_parameters`);
- one step at t = 199 as at inference; with a reference view the reference reconstruction is supervised too (its
  target is the reference itself);
- loss = l2 * MSE + lpips * LPIPS(VGG) + gram * Gram/style loss on VGG16 features, the Gram term after a warm-up
  (:class:`GramLoss`); the code and README use Gram weight 1.0, the paper 0.5 (the default here);
- AdamW (lr 2e-5, betas 0.9/0.999, weight decay 1e-2, eps 1e-8), gradient clipping 1.0, constant learning rate,
  bf16 mixed precision on GPU, batch 1, 10k steps, images resized to 576x1024;
- checkpoints every 1000 steps in the folder layout :meth:`DifixModel.from_pretrained` reads.

Options off by default, for training from random weights (``--model tiny``), where no pretrained VAE reproduces
images yet: an autoencoder warm-up (``--autoencoder-warmup-steps``), a cosine learning-rate schedule and pair
augmentations.

Data: a JSON file in the official format, paths relative to the file (:mod:`~ns_diffusion_methods.fixers.curation`
writes it from a nerfstudio run)::

    {"train": {"id": {"image": "degraded.png", "target_image": "clean.png", "ref_image": "ref.png",
                      "prompt": "remove degradation"}, ...},
     "test":  {...}}

``ref_image`` is optional (omit it to train without reference views).
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ns_diffusion_methods.cli.outputs import default_output
from ns_diffusion_methods.data.images import load_image, resize_images
from ns_diffusion_methods.errors import DataError, ModelUnavailableError
from ns_diffusion_methods.fixers.difix.config import DEFAULT_PROMPT
from ns_diffusion_methods.fixers.difix.fixer import working_size
from ns_diffusion_methods.fixers.difix.model import DifixModel

#: VGG16 ``features`` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 and their Gram weights (Difix loss.py)
GRAM_LAYERS: Tuple[int, ...] = (3, 8, 15, 22, 29)
GRAM_WEIGHTS: Tuple[float, ...] = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class FixerTrainingConfig:
    """Fine-tune Difix on (degraded, clean) image pairs (Difix3D+'s recipe)."""

    data: Path
    """Pairs in Difix's JSON format ({"train": {id: {"image", "target_image", "ref_image"?}}, "test": {...}}),
    for example written by `ns-diffusion fixer-pairs`; image paths are relative to the file."""
    output: Optional[Path] = None
    """Where checkpoints (OUTPUT/checkpoints/step-NNNNNN), the final model (OUTPUT/model) and the metrics log
    (OUTPUT/metrics.jsonl) are written. Default: outputs/ns-diffusion/train-fixer/<timestamp>."""
    model: str = "nvidia/difix_ref"
    """Starting weights: nvidia/difix_ref, nvidia/difix, a folder written by train-fixer, stabilityai/sd-turbo with
    --from-base-model, or tiny (random tiny model, for tests)."""
    from_base_model: bool = False
    """The model is a plain SD-Turbo layout without skip convolutions or LoRA (the paper's starting point): create
    them fresh (skips 1e-5, identity LoRA)."""
    prompt: str = DEFAULT_PROMPT
    """Prompt whose embedding conditions the UNet (the model's text encoder or its cached embedding)."""
    resolution: Optional[Tuple[int, int]] = (576, 1024)
    """Training size (H, W); every image is resized to it. None = native size rounded to a multiple of 8 (then
    all images of a batch must share a size)."""
    num_steps: int = 10000
    """Optimisation steps."""
    batch_size: int = 1
    """Pairs per step."""
    learning_rate: float = 2e-5
    """AdamW learning rate (the peak one with a cosine schedule)."""
    learning_rate_schedule: Literal["constant", "cosine"] = "constant"
    """constant (Difix's recipe), or cosine: from --learning-rate down to 0 at the last step."""
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Gradient clipping (global L2 norm); 0 disables it."""
    autoencoder_warmup_steps: int = 0
    """The first this many of --num-steps train on (clean image -> the same clean image) pairs made from the
    targets (references kept), so that a model from random weights first learns to reproduce images, as the
    pretrained VAE of SD-Turbo already does; then the real pairs. 0 = off: right for pretrained starting weights
    (nvidia/difix_ref, stabilityai/sd-turbo), which reproduce images already."""
    l2_loss_mult: float = 1.0
    """Weight of the mean squared error."""
    lpips_loss_mult: float = 1.0
    """Weight of LPIPS (VGG backbone; needs torchvision's vgg16 weights unless --random-loss-backbones)."""
    gram_loss_mult: float = 0.5
    """Weight of the Gram/style loss on VGG16 features (paper: 0.5; the official code: 1.0)."""
    gram_warmup_steps: int = 2000
    """The Gram loss is added only after this many steps."""
    gram_crop_size: int = 400
    """Side of the random crop (same place in prediction and target) the Gram loss is computed on."""
    random_loss_backbones: bool = False
    """Build the LPIPS and Gram VGG backbones with random weights instead of ImageNet weights. For tests and offline
    smoke runs only: the perceptual losses are then meaningless."""
    mixed_precision: Literal["auto", "bfloat16", "float32"] = "auto"
    """Precision of the forward pass: bfloat16 autocast with float32 master weights, or float32 throughout; auto =
    bfloat16 on CUDA, float32 on a CPU."""
    gradient_checkpointing: bool = False
    """Recompute UNet activations in the backward pass (less GPU memory, slower)."""
    steps_per_save: int = 1000
    """Checkpoint interval (0: only the final model)."""
    steps_per_eval: int = 500
    """Held-out evaluation interval on the "test" pairs (0: only before and after training)."""
    max_eval_pairs: int = 32
    """Most test pairs used by an evaluation."""
    steps_per_log: int = 50
    """Interval of the loss log lines."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    augment: Literal["none", "flip", "flip-and-colour"] = "none"
    """Random changes of each pair (the same for all its views and its target): flip = left-right flip with
    probability 0.5; flip-and-colour = also a random permutation of the colour channels. More varied pairs when they
    come from few scenes; none = Difix's recipe."""
    seed: int = 0
    """Seed of data order, crops, augmentations and posterior samples."""

    def __post_init__(self) -> None:
        if self.autoencoder_warmup_steps < 0:
            raise ValueError(f"--autoencoder-warmup-steps must be >= 0 (0 = no warm-up), but got "
                             f"{self.autoencoder_warmup_steps}.")
        if self.autoencoder_warmup_steps and self.autoencoder_warmup_steps >= self.num_steps:
            raise ValueError(f"--autoencoder-warmup-steps {self.autoencoder_warmup_steps} leaves none of --num-steps "
                             f"{self.num_steps} for the real pairs: the warm-up is the first steps of --num-steps, "
                             f"so give fewer warm-up steps or more steps.")


# ---------------------------------------------------------------------------------------------------------------
# data


@dataclass
class PairRecord:
    """One training pair: degraded render, clean target, optional reference image."""

    name: str
    image: Path
    target: Path
    reference: Optional[Path] = None


def read_pairs(path: Path, split: str, prompt: Optional[str] = None) -> List[PairRecord]:
    """The pairs of ``split`` ("train" or "test") listed in a Difix-format JSON file, checked to exist."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"The pairs file {path} does not exist. Create it with `ns-diffusion fixer-pairs` or write "
                        f"it in Difix's format (see `ns-diffusion train-fixer --help`).")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"The pairs file {path} is not valid JSON: {err}.") from None
    entries = content.get(split, {})
    if not isinstance(entries, dict):
        raise DataError(f"In {path}, \"{split}\" must map ids to {{image, target_image[, ref_image]}} entries.")
    records = []
    for name, entry in sorted(entries.items()):
        if not isinstance(entry, dict) or "image" not in entry or "target_image" not in entry:
            raise DataError(f"Entry {name!r} of \"{split}\" in {path} needs \"image\" and \"target_image\".")
        if prompt is not None and entry.get("prompt", prompt) != prompt:
            raise DataError(f"Entry {name!r} in {path} has prompt {entry['prompt']!r}, but the fixer is trained with "
                            f"one prompt, {prompt!r}; set --prompt or make the prompts equal.")
        files = [path.parent / entry["image"], path.parent / entry["target_image"]]
        if entry.get("ref_image"):
            files.append(path.parent / entry["ref_image"])
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"Entry {name!r} of {path} names missing files: {', '.join(missing)}.")
        records.append(PairRecord(name, *files))  # type: ignore[arg-type]
    return records


class PairedImages(torch.utils.data.Dataset):
    """(degraded, clean[, reference]) pairs as view stacks in [-1, 1].

    Item: ``source`` [V, 3, H, W] = (degraded render, reference) and ``target`` [V, 3, H, W] = (clean image,
    reference); V = 1 without a reference.
    """

    def __init__(self, records: Sequence[PairRecord], resolution: Optional[Tuple[int, int]], multiple: int) -> None:
        self.records = list(records)
        self.resolution = resolution
        self.multiple = multiple

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        record = self.records[index]
        image, target = load_image(record.image), load_image(record.target)
        size = tuple(self.resolution) if self.resolution is not None else \
            working_size(*image.shape[-2:], self.multiple)
        views_in = [image]
        views_out = [target]
        if record.reference is not None:
            reference = load_image(record.reference)
            views_in.append(reference)
            views_out.append(reference)
        source = torch.stack([resize_images(v[None], size)[0] for v in views_in]).clamp(0, 1)
        target_views = torch.stack([resize_images(v[None], size)[0] for v in views_out]).clamp(0, 1)
        return {"source": source * 2 - 1, "target": target_views * 2 - 1}


def collate_pairs(items: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Stack items into [B, V, 3, H, W]; all items of a batch need the same view count and size."""
    shapes = {tuple(item["source"].shape) for item in items}
    if len(shapes) > 1:
        raise DataError(f"A batch mixes pairs of different view counts or sizes {sorted(shapes)}: use --batch-size 1, "
                        f"a fixed --resolution, and either references for all pairs or for none.")
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


# ---------------------------------------------------------------------------------------------------------------
# losses


def _weights_hint(what: str, flag: str) -> str:
    from ns_diffusion_methods.metrics.lpips import lpips_weights_hint

    return (f"{what} needs ImageNet weights: {lpips_weights_hint('vgg')}\n  Or set {flag} 0 to train without this "
            f"loss (or --random-loss-backbones for a smoke test; the loss is then meaningless).")


def build_lpips(random_backbone: bool = False) -> nn.Module:
    """Frozen ``lpips.LPIPS(net="vgg")`` on [-1, 1] images; offline without the VGG16 weights, a clear error.

    Args:
        random_backbone: random VGG weights (``pnet_rand``), for tests only.
    """
    import lpips

    from ns_diffusion_methods.metrics.lpips import weights_unavailable

    try:
        with warnings.catch_warnings():  # lpips 0.1.4 calls torchvision with the deprecated `pretrained` argument
            warnings.simplefilter("ignore", UserWarning)
            network = lpips.LPIPS(net="vgg", pnet_rand=random_backbone, verbose=False)
    except Exception as err:  # noqa: BLE001 - only missing weights become a ModelUnavailableError
        if not weights_unavailable(err):
            raise
        raise ModelUnavailableError(_weights_hint("The LPIPS loss", "--lpips-loss-mult") +
                                    f"\n  [{type(err).__name__}: {err}]") from None
    return network.eval().requires_grad_(False)


def vgg16_features(random_backbone: bool = False) -> nn.Module:
    """torchvision VGG16 ``features`` up to relu5_3, frozen; offline without weights, a clear error."""
    import torchvision

    from ns_diffusion_methods.metrics.lpips import weights_unavailable

    weights = None if random_backbone else torchvision.models.VGG16_Weights.IMAGENET1K_V1
    try:
        network = torchvision.models.vgg16(weights=weights).features[: GRAM_LAYERS[-1] + 1]
    except Exception as err:  # noqa: BLE001 - only missing weights become a ModelUnavailableError
        if not weights_unavailable(err):
            raise
        raise ModelUnavailableError(_weights_hint("The Gram loss", "--gram-loss-mult") +
                                    f"\n  [{type(err).__name__}: {err}]") from None
    return network.eval().requires_grad_(False)


def gram_matrix(features: Tensor) -> Tensor:
    """[B, C, H, W] -> [B*C, B*C]: F F^T with F = features as (B*C) x (H*W) (the batch folded into rows, as Difix)."""
    batch, channels, height, width = features.shape
    flat = features.reshape(batch * channels, height * width)
    return flat @ flat.t()


class GramLoss(nn.Module):
    """Difix's Gram/style loss: sum over VGG16 layers of w_l * mean((G_l(pred) - G_l(target))^2) / (C_l H_l W_l).

    Images in [-1, 1] are mapped to [0, 1], ImageNet-normalised and cropped at one random place (same for both) to
    ``crop_size``.

    Args:
        features: a ``Sequential`` feature extractor (VGG16 ``features``: :func:`vgg16_features`).
        layers: indices of ``features`` whose outputs enter the loss.
        weights: one weight per layer.
        crop_size: side of the random crop.
    """

    def __init__(self, features: nn.Module, layers: Sequence[int] = GRAM_LAYERS,
                 weights: Sequence[float] = GRAM_WEIGHTS, crop_size: int = 400) -> None:
        super().__init__()
        assert len(layers) == len(weights), (layers, weights)
        self.features = features
        self.layers = tuple(layers)
        self.weights = tuple(weights)
        self.crop_size = crop_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, prediction: Tensor, target: Tensor, generator: Optional[random.Random] = None) -> Tensor:
        rng = generator or random
        height, width = prediction.shape[-2:]
        crop_h, crop_w = min(self.crop_size, height), min(self.crop_size, width)
        top, left = rng.randint(0, height - crop_h), rng.randint(0, width - crop_w)
        both = torch.cat([prediction, target])[..., top:top + crop_h, left:left + crop_w]
        both = ((both + 1) / 2 - self.mean) / self.std
        loss = prediction.new_zeros(())
        layer_weights = dict(zip(self.layers, self.weights))
        for index, module in enumerate(self.features):
            both = module(both)
            if index in layer_weights:
                pred_features, target_features = both.chunk(2)
                _, channels, h, w = pred_features.shape
                difference = gram_matrix(pred_features) - gram_matrix(target_features)
                loss = loss + layer_weights[index] * difference.pow(2).mean() / (channels * h * w)
            if index >= self.layers[-1]:
                break
        return loss


# ---------------------------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainingResult:
    """What :func:`train_fixer` produced."""

    model_dir: Path
    """The final model (DifixModel.from_pretrained reads it)."""
    checkpoints: List[Path] = field(default_factory=list)
    """Intermediate checkpoints."""
    evaluations: List[Dict[str, float]] = field(default_factory=list)
    """Held-out metrics: step, l2, psnr (the first one before any update)."""
    losses: List[Dict[str, float]] = field(default_factory=list)
    """Per-step training losses."""


def augment_pairs(source: Tensor, target: Tensor, mode: str, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """``source`` and ``target`` [B, V, 3, H, W] with each pair flipped left-right (probability 0.5) and, for
    ``flip-and-colour``, its colour channels permuted at random; all views of a pair change alike."""
    if mode == "none":
        return source, target
    source, target = source.clone(), target.clone()
    for index in range(source.shape[0]):
        if torch.rand((), generator=generator) < 0.5:
            source[index], target[index] = source[index].flip(-1), target[index].flip(-1)
        if mode == "flip-and-colour":
            order = torch.randperm(3, generator=generator)
            source[index], target[index] = source[index][:, order], target[index][:, order]
    return source, target


def _infinite(loader: torch.utils.data.DataLoader) -> Iterator[Dict[str, Tensor]]:
    while True:
        yield from loader


@torch.no_grad()
def evaluate_fixer(model: DifixModel, dataset: PairedImages, device: torch.device, *, seed: int = 0,
                   max_pairs: int = 32, autocast_dtype: Optional[torch.dtype] = None) -> Dict[str, float]:
    """Mean L2 (in [-1, 1]) and PSNR (in [0, 1]) of the fixed render against its clean image on held-out pairs."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    squared_errors, psnrs = [], []
    for index in range(min(len(dataset), max_pairs)):
        item = dataset[index]
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            fixed = model(item["source"][None].to(device), generator=generator, decode_views="first")[0, 0].float()
        target = item["target"][0].to(device)
        mse = F.mse_loss(fixed, target).item()
        squared_errors.append(mse)
        psnrs.append(-10.0 * math.log10(max(mse / 4.0, 1e-12)))  # [-1, 1] error / 4 = [0, 1] error
    model.train(was_training)
    return {"l2": sum(squared_errors) / len(squared_errors), "psnr": sum(psnrs) / len(psnrs)}


def train_fixer(config: FixerTrainingConfig, console: Any = None) -> TrainingResult:
    """Run the fine-tuning recipe; returns the final model folder and the metrics.

    Validates the data and the loss backbones before loading the model.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ns_diffusion_methods.compat.device import default_device_type

    console = console or Console(stderr=True)
    if config.num_steps < 1 or config.batch_size < 1:
        raise ValueError(f"`num_steps` and `batch_size` must be >= 1, got {config.num_steps}, {config.batch_size}.")
    device = torch.device(default_device_type() if config.device == "auto" else config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested, but CUDA is not available.")
    use_bf16 = config.mixed_precision == "bfloat16" or (config.mixed_precision == "auto" and device.type == "cuda")
    autocast_dtype = torch.bfloat16 if use_bf16 else None

    train_records = read_pairs(config.data, "train", config.prompt)
    test_records = read_pairs(config.data, "test", config.prompt)
    if not train_records:
        raise DataError(f"{config.data} lists no \"train\" pairs.")
    lpips_net = build_lpips(config.random_loss_backbones).to(device) if config.lpips_loss_mult > 0 else None
    gram_loss = GramLoss(vgg16_features(config.random_loss_backbones), crop_size=config.gram_crop_size).to(device) \
        if config.gram_loss_mult > 0 else None

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model = DifixModel.from_pretrained(config.model, prompt=config.prompt, fresh_adapters=config.from_base_model)
    if any(r.reference is not None for r in train_records):
        model.reference_views = True  # trained with references from now on (recorded by save_pretrained)
    model.float().to(device).train()
    if config.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    parameters = model.trainable_parameters()
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, betas=tuple(config.adam_betas),
                                  weight_decay=config.weight_decay, eps=config.adam_eps)
    schedule = None
    if config.learning_rate_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda done: 0.5 * (1.0 + math.cos(math.pi * min(done, config.num_steps) / config.num_steps)))
    train_set = PairedImages(train_records, config.resolution, model.size_multiple)
    test_set = PairedImages(test_records, config.resolution, model.size_multiple)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=False,
                                         collate_fn=collate_pairs,
                                         generator=torch.Generator().manual_seed(config.seed))
    batches = _infinite(loader)
    posterior_generator = torch.Generator().manual_seed(config.seed + 1)
    augment_generator = torch.Generator().manual_seed(config.seed + 2)
    output_dir = Path(config.output) if config.output is not None else default_output("train-fixer")
    output_dir.mkdir(parents=True, exist_ok=True)
    log_file = output_dir / "metrics.jsonl"
    result = TrainingResult(model_dir=output_dir / "model")

    def log(entry: Dict[str, float]) -> None:
        with log_file.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def run_eval(step: int) -> None:
        if not len(test_set):
            return
        metrics = {"step": step, **evaluate_fixer(model, test_set, device, seed=config.seed,
                                                  max_pairs=config.max_eval_pairs, autocast_dtype=autocast_dtype)}
        result.evaluations.append(metrics)
        log({"split": "test", **metrics})
        console.print(f"[bold]step {step}[/bold] held-out l2 {metrics['l2']:.5f}  psnr {metrics['psnr']:.2f} dB")

    run_eval(0)
    start = time.time()
    columns = (TextColumn("[bold]train-fixer"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("train", total=config.num_steps, loss="")
        for step in range(1, config.num_steps + 1):
            batch = next(batches)
            warmup = step <= config.autoencoder_warmup_steps
            source, target = augment_pairs(batch["source"], batch["target"], config.augment, augment_generator)
            source, target = source.to(device), target.to(device)
            if warmup:  # autoencoding: the clean image (and its references) in, the same out
                source = target.clone()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                prediction = model(source, generator=posterior_generator, decode_views="all")
            prediction = prediction.float().flatten(0, 1)  # all views are supervised: [B*V, 3, H, W]
            target = target.flatten(0, 1)
            losses = {"l2": F.mse_loss(prediction, target)}
            total = config.l2_loss_mult * losses["l2"]
            if lpips_net is not None:
                losses["lpips"] = lpips_net(prediction, target).mean()
                total = total + config.lpips_loss_mult * losses["lpips"]
            if gram_loss is not None and step > config.gram_warmup_steps:
                losses["gram"] = gram_loss(prediction, target, generator=rng)
                total = total + config.gram_loss_mult * losses["gram"]
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            learning_rate = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if schedule is not None:
                schedule.step()

            entry = {"step": step, "loss": total.item(), **{k: v.item() for k, v in losses.items()},
                     "lr": learning_rate}
            if config.autoencoder_warmup_steps:
                entry["warmup"] = float(warmup)
            result.losses.append(entry)
            progress.update(task, advance=1, loss=f"loss {entry['loss']:.4f}")
            if config.steps_per_log and step % config.steps_per_log == 0:
                log({"split": "train", **entry})
            if config.steps_per_eval and step % config.steps_per_eval == 0 and step < config.num_steps:
                run_eval(step)
            if config.steps_per_save and step % config.steps_per_save == 0 and step < config.num_steps:
                checkpoint = model.save_pretrained(output_dir / "checkpoints" / f"step-{step:06d}")
                result.checkpoints.append(checkpoint)
    run_eval(config.num_steps)
    model.save_pretrained(result.model_dir)
    console.print(f"Trained {config.num_steps} steps in {time.time() - start:.0f} s; model saved to "
                  f"{result.model_dir} (use it with --model {result.model_dir}).")
    return result
