"""``ns-diffusion benchmark NAME``: run a benchmark definition (the runner is
:mod:`ns_diffusion_methods.benchmark.runner`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import tyro
from typing_extensions import Annotated

from ns_diffusion_methods.benchmark.runner import available_benchmarks, parse_override, run_benchmark


def _name_help() -> str:
    names = available_benchmarks()
    listed = ", ".join(names) if names else "none found"
    return f"The benchmark: one of {listed}, or the path of a definition file (NAME.yaml)."


@dataclass
class BenchmarkCommand:
    """Run one of the package's benchmarks and write results.json, results.md and a plot."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME", help=_name_help())]
    """The benchmark: a name of the package's definitions (or of ./benchmarks), or the path of a definition file."""
    output: Optional[Path] = None
    """Output folder. Default: outputs/ns-diffusion/benchmark/NAME/<timestamp>."""
    set: Annotated[List[Tuple[str, ...]], tyro.conf.UseAppendAction] = field(default_factory=list)
    """Override entries of the definition's `params`, as KEY=VALUE (VALUE parsed as YAML): --set repeats=2 seed=1,
    or --set repeats=2 --set seed=1."""

    @staticmethod
    def help_preamble(args: List[str]) -> Optional[str]:
        """For ``ns-diffusion benchmark NAME --help``: what benchmark NAME measures and its parameters (None when no
        known benchmark is named)."""
        import yaml

        from ns_diffusion_methods.benchmark.runner import find_definition
        from ns_diffusion_methods.errors import UserFacingError

        names = [a for a in args if not a.startswith("-")]
        if not names:
            return None
        try:
            spec = yaml.safe_load(find_definition(names[0]).read_text())
        except (UserFacingError, OSError, yaml.YAMLError):
            return None
        lines = [f"Benchmark {spec.get('name', names[0])} ({spec.get('kind')}):", "", str(spec.get("description", ""))]
        params = spec.get("params") or {}
        if params:
            lines += ["", "params (--set KEY=VALUE):"] + [f"  {key} = {value!r}" for key, value in params.items()]
        return "\n".join(lines) + "\n"

    def main(self) -> int:
        """Run it."""
        overrides = dict(parse_override(s) for group in self.set for s in group)
        run_benchmark(self.name, self.output, overrides)
        return 0
