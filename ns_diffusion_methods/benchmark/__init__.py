"""``ns-diffusion benchmark``: run the benchmark definitions of ``configs/benchmarks/`` and report them."""
