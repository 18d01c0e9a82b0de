"""Difix weights on disk: the diffusers folder layout of the published repositories, read and written.

Layout (:func:`load_folder` / :func:`save_folder`)::

    model_index.json
    unet/config.json, unet/diffusion_pytorch_model.safetensors     full UNet2DConditionModel state dict
    vae/config.json (+ lora_rank, gamma, ignore_skip), vae/diffusion_pytorch_model.safetensors
        AutoencoderKL state dict after peft injection: decoder.skip_conv_{1..4}.base_layer.weight,
        <decoder module>.base_layer.{weight,bias}, <decoder module>.lora_{A,B}.vae_skip.weight
    scheduler/scheduler_config.json
    text_encoder/ + tokenizer/    (published repos)  or  prompt_embeds.safetensors (folders saved here)

Every weight must be present and every stored key used: a mismatch is a
:class:`~ns_diffusion_methods.errors.ModelUnavailableError` naming the first keys, never a half-initialised model.
diffusers, transformers and safetensors are imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Sequence, Tuple

import torch
from torch import Tensor, nn

from ns_diffusion_methods.errors import ModelUnavailableError
from ns_diffusion_methods.fixers.difix.vae import add_skip_connections

if TYPE_CHECKING:
    from ns_diffusion_methods.fixers.difix.model import DifixModel

#: files a published or saved Difix folder must contain (the prompt source is checked separately)
REQUIRED_FILES: Tuple[str, ...] = ("model_index.json", "unet/config.json", "vae/config.json",
                                   "scheduler/scheduler_config.json")
DOWNLOAD_PATTERNS: Tuple[str, ...] = ("model_index.json", "unet/*", "vae/*", "scheduler/*", "text_encoder/*",
                                      "tokenizer/*", "prompt_embeds.safetensors")
PROMPT_FILE = "prompt_embeds.safetensors"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def encode_prompt(text_encoder: nn.Module, tokenizer: Any, prompt: str) -> Tensor:
    """[1, L, D] CLIP embedding of ``prompt`` (last hidden state, padded to the tokenizer's max length)."""
    tokens = tokenizer(prompt, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                       return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(tokens.to(next(text_encoder.parameters()).device))[0].float().cpu()


def _key_listing(keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _weights_error(model: str, file: Path, missing: Sequence[str], unexpected: Sequence[str], flag: str
                   ) -> ModelUnavailableError:
    parts = []
    if missing:
        parts.append(f"missing keys: {_key_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_key_listing(unexpected)}")
    return ModelUnavailableError(
        f"The weights {file} (of `{model}`) do not match the Difix architecture; {'; '.join(parts)}.\n"
        f"  The model is not used half-initialised. Re-download or re-save it (a folder written by "
        f"`ns-diffusion train-fixer` or DifixModel.save_pretrained), or point {flag} at a complete copy.")


def _read_state_dict(component: Path, model: str, flag: str) -> Tuple[Dict[str, Tensor], Path]:
    """The tensors of ``component/diffusion_pytorch_model.safetensors`` (or its shards)."""
    from safetensors.torch import load_file

    def read(file: Path) -> Dict[str, Tensor]:
        try:
            return load_file(str(file))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for truncated files
            raise ModelUnavailableError(
                f"The weights {file} (of `{model}`) cannot be read ({type(err).__name__}: {err}). Re-download or "
                f"re-save the model, or point {flag} at a complete copy.") from None

    single = component / WEIGHTS_NAME
    index = component / (WEIGHTS_NAME + ".index.json")
    if single.exists():
        return read(single), single
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: Dict[str, Tensor] = {}
        for shard in shards:
            state.update(read(component / shard))
        return state, index
    raise ModelUnavailableError(f"The model folder {component.parent} (for `{model}`) has no {component.name}/"
                                f"{WEIGHTS_NAME}. Re-download or re-save it, or point {flag} at a complete copy.")


def _load_into(module: nn.Module, component: Path, model: str, flag: str) -> None:
    """Load ``component``'s weights into ``module``; any missing or unexpected key is an error naming it."""
    state, file = _read_state_dict(component, model, flag)
    result = module.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise _weights_error(model, file, result.missing_keys, result.unexpected_keys, flag)


def _class_config(cls: Any, config: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of a saved diffusers config that ``cls``'s constructor accepts (drops _class_name & co)."""
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in config.items() if k in accepted}


def load_folder(cls: type, folder: Path, model: str, *, prompt: str, timestep: int, flag: str,
                fresh_adapters: bool) -> "DifixModel":
    """A ``cls`` (:class:`DifixModel`) with every tensor read from ``folder`` (see the module docstring)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    index = json.loads((folder / "model_index.json").read_text())
    ours = index.get("ns_diffusion_methods", {})
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    scheduler = DDPMScheduler.from_config(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    # nvidia/difix_ref ships its cross-view UNet as custom code; folders saved here record the flag
    reference_views = bool(ours.get("reference_views", (folder / "unet" / "unet_2d_condition.py").exists()))
    embeds = _prompt_embedding(folder, model, prompt, flag)

    lora_rank, lora_alpha = vae_config.get("lora_rank", 4), vae_config.get("lora_alpha", 8.0)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the files (checked below)
        unet = UNet2DConditionModel(**_class_config(UNet2DConditionModel, unet_config))
        vae = AutoencoderKL(**_class_config(AutoencoderKL, vae_config))
        if not fresh_adapters:
            add_skip_connections(vae, lora_rank=lora_rank, lora_alpha=lora_alpha)
    _load_into(unet, folder / "unet", model, flag)
    _load_into(vae, folder / "vae", model, flag)
    if fresh_adapters:  # a plain SD VAE: new skip convolutions (1e-5) and an identity LoRA, as for training
        add_skip_connections(vae, lora_rank=lora_rank, lora_alpha=lora_alpha)
    difix = cls(unet, vae, scheduler, embeds, prompt=prompt, timestep=timestep, gamma=vae_config.get("gamma", 1.0),
                ignore_skip=vae_config.get("ignore_skip", False), lora_rank=lora_rank, lora_alpha=lora_alpha,
                reference_views=reference_views)
    leftover = [name for name, t in list(difix.named_parameters()) + list(difix.named_buffers()) if t.is_meta]
    assert not leftover, f"tensors left uninitialised after loading {folder}: {leftover[:5]}"
    return difix


def _prompt_embedding(folder: Path, model: str, prompt: str, flag: str) -> Tensor:
    """Encode ``prompt`` with the folder's text encoder (then free it), or read the cached embedding."""
    if (folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir():
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
        text_encoder, info = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), output_loading_info=True)
        bad_missing, bad_unexpected = info.get("missing_keys", []), info.get("unexpected_keys", [])
        if bad_missing or bad_unexpected:
            raise _weights_error(model, folder / "text_encoder", list(bad_missing), list(bad_unexpected), flag)
        embeds = encode_prompt(text_encoder.eval(), tokenizer, prompt)
        del text_encoder
        return embeds
    cached = folder / PROMPT_FILE
    if cached.exists():
        from safetensors import safe_open

        with safe_open(str(cached), framework="pt") as file:
            stored = (file.metadata() or {}).get("prompt")
            embeds = file.get_tensor("prompt_embeds")
        if stored != prompt:
            raise ModelUnavailableError(
                f"The model folder {folder} stores the embedding of the prompt {stored!r} but has no text_encoder/ "
                f"and tokenizer/ to encode {prompt!r}. Use its prompt, or add the text encoder and tokenizer of the "
                f"base model (stabilityai/sd-turbo) to the folder.")
        return embeds.float()
    raise ModelUnavailableError(
        f"The model folder {folder} (for `{model}`) has neither text_encoder/ + tokenizer/ nor {PROMPT_FILE}, so "
        f"the prompt cannot be embedded. Re-download or re-save it, or point {flag} at a complete copy.")


def save_folder(model: "DifixModel", folder: Path) -> Path:
    """Write ``model`` in the layout :func:`load_folder` reads (float32 weights, unmerged LoRA); returns ``folder``."""
    import diffusers
    from safetensors.torch import save_file

    for sub in ("unet", "vae", "scheduler"):
        (folder / sub).mkdir(parents=True, exist_ok=True)

    def tensors(module: nn.Module) -> Dict[str, Tensor]:
        return {k: v.detach().to(device="cpu", dtype=torch.float32 if v.is_floating_point() else v.dtype)
                .contiguous() for k, v in module.state_dict().items()}

    model.unet.save_config(folder / "unet")
    save_file(tensors(model.unet), str(folder / "unet" / WEIGHTS_NAME))
    model.vae.save_config(folder / "vae")
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    vae_config.update(lora_rank=model.lora_rank, lora_alpha=model.lora_alpha, gamma=model.gamma,
                      ignore_skip=model.ignore_skip)
    (folder / "vae" / "config.json").write_text(json.dumps(vae_config, indent=2, sort_keys=True))
    save_file(tensors(model.vae), str(folder / "vae" / WEIGHTS_NAME))
    model.scheduler.save_config(folder / "scheduler")
    save_file({"prompt_embeds": model.prompt_embeds.detach().float().cpu().contiguous()},
              str(folder / PROMPT_FILE), metadata={"prompt": model.prompt})
    index = {
        "_class_name": "DifixPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", type(model.scheduler).__name__],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "ns_diffusion_methods": {"prompt": model.prompt, "timestep": model.timestep,
                                 "reference_views": model.reference_views},
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
