"""The fixer backends as one command-line choice, built the way nerfstudio builds its dataparser union.

A config field typed :data:`AnnotatedFixerUnion` becomes a tyro subcommand that keeps the field's prefix:

.. code-block:: bash

    ns-train difix3d-nerfacto --data CAPTURE pipeline.fixer:identity
    ns-train difix3d-nerfacto --data CAPTURE pipeline.fixer:difix --pipeline.fixer.model nvidia/difix

A backend's flags follow its subcommand, after the other flags (tyro applies flags to the subcommand they follow); a
dataparser subcommand may come before or after it. The configs are import-light: Difix's code (diffusers, peft) is
imported only when the fixer is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

import tyro

from ns_diffusion_methods.fixers.base import FixerConfig
from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig
from ns_diffusion_methods.fixers.identity import IdentityFixerConfig
from ns_diffusion_methods.fixers.oracle import OracleFixerConfig

#: subcommand name -> the backend's default config
fixer_configs: Dict[str, FixerConfig] = {
    "difix": DifixFixerConfig(),
    "identity": IdentityFixerConfig(),
    "oracle": OracleFixerConfig(),
}

#: subcommand name -> one line of help
fixer_descriptions: Dict[str, str] = {
    "difix": "Difix single-step diffusion fixer (Hub id, local folder, or 'tiny'), with reference views.",
    "identity": "Returns the renders unchanged: the ablation baseline (loads nothing).",
    "oracle": "Ground truth of a synthetic capture's scene, blurred and noised (benchmarks).",
}

if TYPE_CHECKING:
    AnnotatedFixerUnion = FixerConfig
else:
    AnnotatedFixerUnion = tyro.extras.subcommand_type_from_defaults(fixer_configs, descriptions=fixer_descriptions)
    """Union of the fixer backends; subcommands ``PREFIX:difix``, ``PREFIX:identity``, ``PREFIX:oracle``."""
