"""Difix3D+ for nerfstudio: ``difix3d-nerfacto`` and ``difix3d-splat`` (see README.md in this folder)."""
