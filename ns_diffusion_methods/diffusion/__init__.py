"""Shared diffusion building blocks: resolving published weights, tiny models for tests and CPU runs."""
