"""Triplanes shared by ``ssdnerf`` and ``renderdiffusion``: three axis-aligned feature planes over [-1, 1]^3."""

from ns_diffusion_methods.triplane.functional import PLANE_AXES, project_to_planes, sample_triplane

__all__ = ["PLANE_AXES", "project_to_planes", "sample_triplane"]
