"""MALD-NeRF (Lin et al., ECCV 2024): NeRF object removal with masked adversarial training, a scene-customised
inpainting LDM and an iterative dataset update. See ``README.md`` in this folder and ``config.py`` for the presets."""
