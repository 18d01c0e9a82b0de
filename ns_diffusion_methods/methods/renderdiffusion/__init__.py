"""RenderDiffusion (Anciukevičius et al., CVPR 2023): ``ns-train renderdiffusion`` / ``renderdiffusion-small``.

See ``README.md`` in this folder for the method, the choices the paper leaves open and measured results.
"""
