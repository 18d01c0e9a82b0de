"""The base of the package's pipelines: what every method's pipeline shares with nerfstudio's ``VanillaPipeline``.

A :class:`DiffusionPipeline`

- turns on the package's run-time fixes before anything else (:func:`~ns_diffusion_methods.compat.
  enable_for_package_runs`): ``ns-eval``, ``ns-render`` and ``ns-viewer`` build the pipeline without the package's
  trainer, and must show user errors as ``Error:`` lines and load the run's checkpoint under torch >= 2.6;
- leaves metrics whose weights are unavailable offline out of the results it reports
  (:func:`~ns_diffusion_methods.metrics.lpips.drop_unavailable`), instead of NaN entries;
- names the run's untrained (``tiny``) models in ``ns-eval``'s results
  (:func:`~ns_diffusion_methods.diffusion.untrained.mark_untrained`).

Pipelines that must not be wrapped in DDP, or that pass their model more than nerfstudio does, build themselves from
the two halves of ``VanillaPipeline``'s set-up (:meth:`DiffusionPipeline._set_up_datamanager`, then their checks, then
:meth:`DiffusionPipeline._set_up_model`).

Methods hook the training loop one way: nerfstudio ``TrainingCallback`` s returned by ``get_training_callbacks``
(with the ``TrainingCallbackAttributes`` nerfstudio passes: optimizers, grad scaler, trainer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple

import torch
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch.cuda.amp.grad_scaler import GradScaler

from ns_diffusion_methods.compat import enable_for_package_runs
from ns_diffusion_methods.diffusion.untrained import mark_untrained
from ns_diffusion_methods.metrics.lpips import drop_unavailable


class DiffusionPipeline(VanillaPipeline):
    """``VanillaPipeline`` with the package's run-time fixes on and offline-safe results (see the module docstring).

    Subclasses that check their data before ``super().__init__`` call :func:`enable_for_package_runs` first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        enable_for_package_runs()
        super().__init__(*args, **kwargs)

    def _set_up_datamanager(self, config: VanillaPipelineConfig, device: str,
                            test_mode: Literal["test", "val", "inference"], world_size: int, local_rank: int) -> None:
        """The first half of ``VanillaPipeline.__init__``, called instead of ``super().__init__``: the package's
        run-time fixes, the module, config and datamanager (on ``device``)."""
        enable_for_package_runs()
        torch.nn.Module.__init__(self)
        self.config = config
        self.test_mode = test_mode
        self.world_size = world_size
        self.datamanager = config.datamanager.setup(device=device, test_mode=test_mode, world_size=world_size,
                                                    local_rank=local_rank)
        self.datamanager.to(device)
        assert self.datamanager.train_dataset is not None, "Missing input dataset"

    def _set_up_model(self, device: str, grad_scaler: Optional[GradScaler], **model_kwargs: Any) -> None:
        """The second half: the model, given what ``VanillaPipeline`` gives it plus ``model_kwargs``, on ``device``
        (not wrapped in DDP; the pipeline decides)."""
        dataset = self.datamanager.train_dataset
        assert dataset is not None, "Missing input dataset"
        self._model = self.config.model.setup(scene_box=dataset.scene_box, num_train_data=len(dataset),
                                              metadata=dataset.metadata, device=device, grad_scaler=grad_scaler,
                                              **model_kwargs)
        self.model.to(device)

    def get_eval_image_metrics_and_images(self, step: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """nerfstudio's in-training image metrics, without unavailable metrics."""
        metrics, images = super().get_eval_image_metrics_and_images(step)
        return drop_unavailable(metrics), images

    def get_average_image_metrics(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """nerfstudio's averaged metrics, without unavailable metrics."""
        return drop_unavailable(super().get_average_image_metrics(*args, **kwargs))

    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path: Optional[Path] = None,
                                       get_std: bool = False) -> Dict[str, Any]:
        """nerfstudio's metrics over every evaluation view without unavailable metrics; called without ``step`` (by
        ``ns-eval``), the results also name the run's untrained models."""
        results = drop_unavailable(super().get_average_eval_image_metrics(step=step, output_path=output_path,
                                                                          get_std=get_std))
        return results if step is not None else mark_untrained(results, self.config)
