"""Training engine pieces shared by the package's methods: a nerfstudio ``Trainer`` that never loses work and keeps long
work between iterations out of its timing, the base of the package's pipelines, and the callback type for that work."""

from ns_diffusion_methods.engine.callbacks import BetweenIterationsCallback
from ns_diffusion_methods.engine.trainer import DiffusionTrainer, DiffusionTrainerConfig

__all__ = ["BetweenIterationsCallback", "DiffusionTrainer", "DiffusionTrainerConfig"]
