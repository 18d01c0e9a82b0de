"""The ``tiny`` inpainter: a random-weight tiny inpainting LDM through exactly the code of the real one.

Built from config by :mod:`ns_diffusion_methods.diffusion.tiny` (9-channel UNet, 4-level VAE, small CLIP text
encoder and tokenizer, the Stable Diffusion noise schedule) and wrapped in
:class:`~ns_diffusion_methods.inpainters.ldm.LatentInpainter`, so full and partial DDIM, guidance, LoRA loading and
customisation all run the same lines as with Stable Diffusion. Its output is noise-like: use it for tests and CPU
smoke runs, never for quality. Its native size is 64 px (UNet sample size 8 x VAE factor 8): by default it inpaints
and customises with short sides of at most 64 px (smaller frames keep their size), so it stays fast on CPU.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

from ns_diffusion_methods.inpainters.ldm import LatentInpainter, LDMInpainterConfig


def tiny_inpainting_components(seed: int = 0) -> Dict[str, Any]:
    """Matching random-weight ``unet`` (9 input channels), ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``."""
    from ns_diffusion_methods.diffusion.tiny import tiny_components

    with tempfile.TemporaryDirectory(prefix="ns-diffusion-tiny-tokenizer-") as folder:
        # the tokenizer reads its vocabulary files while being built; the folder is not needed afterwards
        return tiny_components(folder, in_channels=9, seed=seed)


def build_tiny_inpainter(config: LDMInpainterConfig, device: Union[str, torch.device] = "cpu",
                         seed: int = 0) -> LatentInpainter:
    """A :class:`LatentInpainter` around :func:`tiny_inpainting_components` (weights seeded by ``seed``)."""
    return LatentInpainter(config, device=device, **tiny_inpainting_components(seed))


def write_tiny_inpainting_model(folder: Union[str, Path], seed: int = 0) -> Path:
    """Save the tiny inpainting LDM as a diffusers model folder (``model_index.json`` + one folder per part).

    The folder loads with ``LDMInpainterConfig(model=str(folder))`` like any downloaded model: tests use it to exercise
    the from-folder loading path and customisation of a "base model" without network access.
    """
    folder = Path(folder)
    components = tiny_inpainting_components(seed)
    for name, part in components.items():
        part.save_pretrained(str(folder / name))
    index = {"_class_name": "StableDiffusionInpaintPipeline", "_diffusers_version": "0.30.0",
             **{name: [("transformers" if name in ("text_encoder", "tokenizer") else "diffusers"),
                       type(part).__name__] for name, part in components.items()}}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
