"""ImageStore: what is written comes back, through a checkpoint too."""

import torch

from ns_diffusion_methods.dataset_updates import ImageStore


def test_set_get_quantises_to_uint8_and_keeps_sizes():
    store = ImageStore(3, height=5, width=6)
    image = torch.rand(4, 6, 3)
    store.set(1, image, step=7)
    out = store.get(1)
    assert out.shape == (4, 6, 3)
    assert torch.allclose(out, image, atol=0.5 / 255 + 1e-6)  # rounding to the nearest of 256 levels
    assert store.filled.tolist() == [False, True, False]
    assert store.last_step.tolist() == [-1, 7, -1]


def test_state_dict_round_trip_restores_images_exactly():
    store = ImageStore(2, 4, 4)
    store.set_many([0, 1], [torch.rand(4, 4, 3), torch.rand(3, 2, 3)], step=3)
    restored = ImageStore(2, 4, 4)
    restored.load_state_dict(store.state_dict())
    for i in range(2):
        assert torch.equal(restored.get(i), store.get(i))
    assert torch.equal(restored.updates, store.updates)


def test_float_store_is_lossless():
    store = ImageStore(1, 2, 2, dtype=torch.float32)
    image = torch.rand(2, 2, 3)
    store.set(0, image)
    assert torch.equal(store.get(0), image)
