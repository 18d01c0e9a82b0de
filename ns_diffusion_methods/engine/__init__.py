"""Training engine pieces shared by the package's methods (a nerfstudio ``Trainer`` that never loses work)."""

from ns_diffusion_methods.engine.trainer import DiffusionTrainer, DiffusionTrainerConfig

__all__ = ["DiffusionTrainer", "DiffusionTrainerConfig"]
