"""Command-line tools: ``ns-diffusion`` (one subcommand per task) and ``ns-diffusion-synth``."""
