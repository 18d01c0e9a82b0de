"""Difix: SD-Turbo fine-tuned as a single-step image fixer, with reference-view attention (Difix3D+, CVPR 2025).

- :mod:`.config` -- :class:`DifixFixerConfig` (import-light: ``pipeline.fixer:difix`` on the command line);
- :mod:`.model` -- :class:`~.model.DifixModel`, one forward pass of the network;
- :mod:`.vae` -- the SD VAE with encoder-to-decoder skips and the decoder LoRA;
- :mod:`.weights` -- the published diffusers folder layout, read and written;
- :mod:`.fixer` -- :class:`~.fixer.DifixFixer`, the model behind the fixer interface.

diffusers, peft and transformers are imported only when a model is built. ``DifixFixer`` and ``DifixModel`` are
attributes of this package too, imported on first access (``config.yml`` files of earlier runs name
``ns_diffusion_methods.fixers.difix.DifixFixer``).
"""

from typing import Any

from ns_diffusion_methods.fixers.difix.config import DEFAULT_PROMPT, DEFAULT_TIMESTEP, DifixFixerConfig

__all__ = ["DEFAULT_PROMPT", "DEFAULT_TIMESTEP", "DifixFixer", "DifixFixerConfig", "DifixModel"]


def __getattr__(name: str) -> Any:
    if name == "DifixFixer":
        from ns_diffusion_methods.fixers.difix.fixer import DifixFixer

        return DifixFixer
    if name == "DifixModel":
        from ns_diffusion_methods.fixers.difix.model import DifixModel

        return DifixModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
