"""The benchmark's oracle inpainter (view lookup, inconsistency, outside pixels kept) and the viewer thumbnails."""

import torch

from ns_diffusion_methods.inpainters import OracleInpainterConfig
from ns_diffusion_methods.methods.mald_nerf.benchmark import view_inconsistent, write_oracle
from ns_diffusion_methods.methods.mald_nerf.viewer import thumbnail


def test_view_inconsistent_shifts_colours_and_translates():
    background = torch.rand(12, 16, 3) * 0.5 + 0.25
    a = view_inconsistent(background, torch.Generator().manual_seed(0), colour_shift=0.1, jitter_px=2)
    b = view_inconsistent(background, torch.Generator().manual_seed(1), colour_shift=0.1, jitter_px=2)
    assert a.shape == background.shape and not torch.allclose(a, b)
    same = view_inconsistent(background, torch.Generator().manual_seed(0), colour_shift=0.0, jitter_px=0)
    assert torch.allclose(same, background)  # no shift, no jitter: the background itself


def test_oracle_returns_each_views_fill_inside_and_the_capture_outside(object_removal_capture, tmp_path):
    path = tmp_path / "oracle.pt"
    stats = write_oracle(object_removal_capture, path, seed=0, colour_shift=0.1, jitter_px=1)
    assert 10 < stats["masked_psnr"] < 60  # close to the background, but not equal to it
    oracle = OracleInpainterConfig(oracle_file=path).setup(device="cpu")
    data = torch.load(path)
    captured = data["captured"].float() / 255
    fills = data["fills"].float() / 255
    images = captured[[3, 0]].permute(0, 3, 1, 2)  # two views, out of order
    masks = torch.zeros(2, 1, *images.shape[-2:], dtype=torch.bool)
    masks[:, :, 5:15, 10:30] = True
    out = oracle.inpaint(images, masks)
    assert torch.equal(out[~masks.expand_as(out)], images[~masks.expand_as(images)])
    assert torch.allclose(out[0].permute(1, 2, 0)[5:15, 10:30], fills[3][5:15, 10:30])
    assert torch.allclose(out[1].permute(1, 2, 0)[5:15, 10:30], fills[0][5:15, 10:30])


def test_thumbnails_have_the_viewers_height():
    image = torch.rand(36, 48, 3)
    thumb = thumbnail(image, height=100)
    assert thumb.shape == (100, 133, 3) and thumb.dtype.name == "uint8"


def test_viewer_training_cameras_show_the_inpainted_images(object_removal_capture):
    import socket
    from types import SimpleNamespace

    import numpy as np
    import viser
    from nerfstudio.configs.base_config import ViewerConfig

    from ns_diffusion_methods.methods.mald_nerf.viewer import show_training_images

    from .conftest import build_pipeline

    pipeline = build_pipeline(object_removal_capture)
    pipeline.maybe_update_dataset(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port)
    try:
        handles = {}
        for index in (0, 5):  # the viewer draws a subset of the cameras, by index
            handles[index] = server.scene.add_camera_frustum(
                name=f"/cameras/camera_{index:05d}", fov=1.0, aspect=1.3, scale=0.1,
                image=np.zeros((10, 13, 3), np.uint8), wxyz=(1.0, 0.0, 0.0, 0.0), position=(float(index), 2.0, 3.0))
        state = SimpleNamespace(viser_server=server, camera_handles=dict(handles), config=ViewerConfig(),
                                current_camera_idx=0)
        assert show_training_images(state, pipeline.datamanager) == 2
        for index, old in handles.items():
            new = state.camera_handles[index]
            assert new is not old
            assert np.allclose(new.position, (index, 2.0, 3.0)) and np.allclose(new.wxyz, (1, 0, 0, 0))
    finally:
        server.stop()
    assert show_training_images(SimpleNamespace(camera_handles={}), pipeline.datamanager) == 0
