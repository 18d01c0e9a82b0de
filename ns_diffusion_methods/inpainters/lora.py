"""Saving and loading the LoRA adapter of an inpainting UNet (peft), in peft's own folder layout.

A LoRA folder holds ``adapter_config.json`` (the ``peft.LoraConfig``) and ``adapter_model.safetensors`` (the adapter
weights as returned by ``peft.get_peft_model_state_dict``), plus ``customization.json`` with the settings and data
hash that produced it (see :mod:`ns_diffusion_methods.inpainters.customization`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from torch import nn

from ns_diffusion_methods.errors import ModelUnavailableError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: UNet attention projections that receive LoRA (query, key, value and output of every attention layer)
DEFAULT_TARGET_MODULES: List[str] = ["to_q", "to_k", "to_v", "to_out.0"]


def add_lora(unet: nn.Module, rank: int, alpha: float, target_modules: Sequence[str] = tuple(DEFAULT_TARGET_MODULES),
             dropout: float = 0.0) -> None:
    """Inject a trainable LoRA adapter (``default``) into the attention projections of a diffusers UNet."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules),
                                lora_dropout=dropout, init_lora_weights="gaussian"))


def save_lora(unet: nn.Module, folder: Path) -> None:
    """Write the UNet's ``default`` adapter (config and weights) to ``folder``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    unet.peft_config["default"].save_pretrained(str(folder))
    state = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(state, str(folder / WEIGHTS_FILE))


def load_lora(unet: nn.Module, folder: Path, flag: str = "--pipeline.inpainter.lora-path") -> None:
    """Inject the adapter saved in ``folder`` into ``unet`` and load its weights; every key must match."""
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelUnavailableError(
            f"The LoRA folder {folder} is missing {', '.join(missing)}. Point {flag} at a folder written by "
            f"`ns-diffusion customize` (it holds {CONFIG_FILE} and {WEIGHTS_FILE}).")
    unet.add_adapter(LoraConfig.from_pretrained(str(folder)))
    state = load_file(str(folder / WEIGHTS_FILE))
    result = set_peft_model_state_dict(unet, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ModelUnavailableError(
            f"The LoRA weights in {folder / WEIGHTS_FILE} do not fit this UNet (unexpected keys, e.g. "
            f"{', '.join(unexpected[:3])}): they were made for another base model. Re-run `ns-diffusion customize` "
            f"with this model or change {flag}.")
    # a LoRA key of the model that the file does not provide would silently keep its random init
    expected = {k for k in _adapter_keys(unet)}
    absent = sorted(expected - {k for k in state})
    if absent:
        raise ModelUnavailableError(
            f"The LoRA weights in {folder / WEIGHTS_FILE} lack {len(absent)} adapter tensors of this UNet (e.g. "
            f"{', '.join(absent[:3])}): they were made for another base model or other settings. Re-run "
            f"`ns-diffusion customize` or change {flag}.")


def _adapter_keys(unet: nn.Module) -> List[str]:
    from peft import get_peft_model_state_dict

    return list(get_peft_model_state_dict(unet).keys())
