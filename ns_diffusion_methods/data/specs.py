"""Dataparser entry points (group ``nerfstudio.dataparser_configs``).

nerfstudio loads these while its own ``base_datamanager`` module is half-imported, so this module (and every module
it imports) may import only ``nerfstudio.data.dataparsers.*``, ``nerfstudio.data.scene_box``, ``nerfstudio.cameras.*``,
``nerfstudio.plugins.registry_dataparser`` and this package's import-light modules: never trainers, pipelines,
datamanagers or models.
"""

from __future__ import annotations

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from ns_diffusion_methods.data.object_mask_data import ObjectMaskDataParserConfig
from ns_diffusion_methods.data.spinnerf import SpinNerfDataParserConfig
from ns_diffusion_methods.data.srn_dataparser import SRNDataParserConfig

srn_dataparser = DataParserSpecification(
    config=SRNDataParserConfig(),
    description="Multi-object data in the SRN layout: split folders (train/test, or PixelNeRF's cars_train/cars_test, "
                "chairs_train/chairs_2.0_train) of object folders with rgb/, pose/ (OpenCV c2w), intrinsics.txt; for "
                "ssdnerf and renderdiffusion.")
spinnerf_dataparser = DataParserSpecification(
    config=SpinNerfDataParserConfig(),
    description="SPIn-NeRF object-removal scene: images_4/ with label/ and test_label/ masks, poses_bounds.npy; first "
                "40 sorted images = object-free test views")
object_mask_dataparser = DataParserSpecification(
    config=ObjectMaskDataParserConfig(),
    description="nerfstudio-data capture whose frames carry an `object_mask_path` (object to remove), for mald-nerf")
