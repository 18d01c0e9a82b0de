"""Data building blocks: dataparsers (SRN multi-object, SPIn-NeRF), multi-object datamanager, mask validation.

Dataparser entry points live in :mod:`ns_diffusion_methods.data.specs`, which must stay import-light.
"""
