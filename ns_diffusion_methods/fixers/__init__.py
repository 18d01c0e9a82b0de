"""Image fixers: repair artifacts in renders of a 3D model (Difix single-step diffusion, identity, oracle).

- :mod:`~ns_diffusion_methods.fixers.base` -- the :class:`Fixer` interface and the abstract :class:`FixerConfig`;
- :mod:`~ns_diffusion_methods.fixers.difix` -- Difix (SD-Turbo, one step at t = 199, reference-view attention);
- :mod:`~ns_diffusion_methods.fixers.identity` -- returns its input: the ablation baseline;
- :mod:`~ns_diffusion_methods.fixers.oracle` -- a synthetic capture's ground truth, for benchmarks;
- :mod:`~ns_diffusion_methods.fixers.configs` -- the backends as one command-line choice (``pipeline.fixer:difix``);
- :mod:`~ns_diffusion_methods.fixers.attention` -- the reference-view attention processor;
- :mod:`~ns_diffusion_methods.fixers.training` -- the ``ns-diffusion train-fixer`` recipe and Difix's losses;
- :mod:`~ns_diffusion_methods.fixers.curation` -- (degraded render, real image) pairs from a nerfstudio run;
- :mod:`~ns_diffusion_methods.fixers.commands` -- ``ns-diffusion fix`` / ``train-fixer`` / ``fixer-pairs``.

Heavy modules (diffusers, peft) are imported only when a Difix model is built.
"""

from ns_diffusion_methods.fixers.base import Fixer, FixerConfig
from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig
from ns_diffusion_methods.fixers.identity import IdentityFixer, IdentityFixerConfig
from ns_diffusion_methods.fixers.oracle import OracleFixerConfig

__all__ = ["DifixFixerConfig", "Fixer", "FixerConfig", "IdentityFixer", "IdentityFixerConfig", "OracleFixerConfig"]
