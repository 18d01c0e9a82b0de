"""``ns-diffusion benchmark``: run the benchmark definitions (``definitions/``, shipped with the package) and report
them."""
