"""``ns-diffusion benchmark NAME``: run a benchmark definition (the runner is
:mod:`ns_diffusion_methods.benchmark.runner`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import tyro
from typing_extensions import Annotated

from ns_diffusion_methods.benchmark.runner import available_benchmarks, parse_override, run_benchmark


def _name_help() -> str:
    names = available_benchmarks()
    listed = ", ".join(names) if names else "none found (run from the repository root)"
    return (f"The benchmark: a name from configs/benchmarks/ ({listed}), or the path of a definition file "
            f"(NAME.yaml).")


@dataclass
class BenchmarkCommand:
    """Run a benchmark of configs/benchmarks/ and write results.json, results.md and a plot."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME", help=_name_help())]
    """The benchmark: a name from configs/benchmarks/, or the path of a definition file (NAME.yaml)."""
    output: Optional[Path] = None
    """Output folder. Default: outputs/ns-diffusion/benchmark/NAME/<timestamp>."""
    set: List[str] = field(default_factory=list)
    """Override entries of the definition's `params`, as KEY=VALUE (VALUE parsed as YAML), e.g. --set repeats=2."""

    def main(self) -> int:
        """Run it."""
        overrides = dict(parse_override(s) for s in self.set)
        run_benchmark(self.name, self.output, overrides)
        return 0
