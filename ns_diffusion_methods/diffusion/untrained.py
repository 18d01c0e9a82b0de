"""Runs whose pretrained diffusion models have random weights (``tiny``) say so everywhere.

``tiny`` builds small random-weight inpainters and fixers for tests and CPU tries. Results of a run with one are not
those of the method, so such a run is marked

- at its start: a warning on the console (:class:`~ns_diffusion_methods.engine.DiffusionTrainer`);
- in its ``config.yml``: ``untrained_models`` (the trainer writes the file again with it);
- in ``ns-eval``'s JSON: ``results["untrained_models"]`` (:func:`mark_untrained`).

A pipeline config lists its pretrained-weight slots with a ``pretrained_models()`` method returning
``{flag: model name}``. Diffusion models that a method trains itself (the U-Nets of ssdnerf and renderdiffusion) are
not slots: they are trained by the run, so they never count as untrained.
"""

from __future__ import annotations

from typing import Any, Dict, List

#: the model name that builds small random-weight models
TINY = "tiny"


def untrained_models(pipeline_config: Any) -> List[str]:
    """``"FLAG tiny"`` for each pretrained-weight slot of ``pipeline_config`` set to ``tiny`` (in flag order)."""
    slots = getattr(pipeline_config, "pretrained_models", None)
    if slots is None:
        return []
    return [f"{flag} {name}" for flag, name in slots().items() if name == TINY]


def untrained_warning(untrained: List[str]) -> str:
    """The console warning of a run with untrained models."""
    return (f"Untrained diffusion models: {', '.join(untrained)} (random weights, for tests and CPU tries). This "
            f"run's results are not those of the method; use published or fine-tuned weights for real results.")


def mark_untrained(results: Dict[str, Any], pipeline_config: Any) -> Dict[str, Any]:
    """Add ``untrained_models`` to ``ns-eval``'s ``results`` when the run has any (returns ``results``)."""
    untrained = untrained_models(pipeline_config)
    if untrained:
        results["untrained_models"] = untrained
    return results
