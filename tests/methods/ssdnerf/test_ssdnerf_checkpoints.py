"""SSDNeRF checkpoints written in chunks with bfloat16 Adam moments: exact codes, atomic writes, old checkpoints.

The checkpoint is made the way the package's trainer makes it: the state dict with the per-object buffers replaced by
streamed tensors (:func:`streamed_code_state`, what ``SSDNeRFPipeline.checkpoint_state_dict`` does), written by
:func:`atomic_torch_save`; it is read back with a plain ``torch.load`` (what nerfstudio's loaders do) and
``load_state_dict``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox

from ns_diffusion_methods.engine.trainer import atomic_torch_save, latest_complete_step, partial_dir_of
from ns_diffusion_methods.methods.ssdnerf import checkpoints
from ns_diffusion_methods.methods.ssdnerf.checkpoints import code_state_bytes, streamed_code_state
from ns_diffusion_methods.methods.ssdnerf.diffusion import CodeUNetConfig
from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModelConfig
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig

NUM_OBJECTS = 7
CHANNELS, RESOLUTION = 2, 8
CODE_NUMEL = 3 * CHANNELS * RESOLUTION * RESOLUTION  # 384
LR = 0.05


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    config = SSDNeRFModelConfig(
        code_channels=CHANNELS, code_resolution=RESOLUTION, code_init_scale=0.5,
        renderer=BoxVolumeRendererConfig(num_samples=8, num_importance_samples=0),
        unet=CodeUNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_resolutions=(4,),
                            attention_head_dim=8, dropout=0.0, norm_num_groups=8),
    )
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    return config.setup(scene_box=box, num_train_data=10, metadata={"num_objects": NUM_OBJECTS})


def trained_model(seed: int = 0):
    """A tiny model whose objects took different numbers of per-object Adam steps (object 6 none)."""
    model = tiny_model(seed)
    g = torch.Generator().manual_seed(seed + 10)
    for visit in ([0, 1, 2], [2, 3], [4, 5, 2], [0]):
        model.code_adam_step(torch.tensor(visit), torch.randn(len(visit), *model.code_shape, generator=g), lr=LR)
    return model


def save(model, path: Path, moments="bfloat16", chunk_objects=3) -> None:
    """What the trainer writes for an SSDNeRF pipeline (the model's keys, without the pipeline's ``_model.``)."""
    state = model.state_dict()
    state.update(streamed_code_state(model, "", moments, chunk_objects))
    atomic_torch_save({"step": 4, "pipeline": state}, path)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu")  # nerfstudio's call (weights_only by default from torch 2.6)


def record_sizes(path: Path) -> dict:
    """Bytes of the zip record of each per-object buffer (found through its storage offset)."""
    layout = torch.load(path, map_location="meta")["pipeline"]
    offsets = {layout[name].untyped_storage()._checkpoint_offset: name for name in checkpoints.CODE_BUFFERS}
    sizes = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            handle.seek(info.header_offset + 26)
            name_len, extra_len = int.from_bytes(handle.read(2), "little"), int.from_bytes(handle.read(2), "little")
            data_offset = info.header_offset + 30 + name_len + extra_len
            if data_offset in offsets:
                sizes[offsets[data_offset]] = info.file_size
    return sizes


def test_round_trip_keeps_codes_and_steps_exact_and_moments_to_bfloat16(tmp_path):
    model = trained_model()
    save(model, tmp_path / "step-000000004.ckpt")
    state = load(tmp_path / "step-000000004.ckpt")["pipeline"]
    assert state["codes_pre"].dtype == torch.float32
    assert state["code_exp_avg"].dtype == state["code_exp_avg_sq"].dtype == torch.bfloat16
    assert torch.equal(state["codes_pre"], model.codes_pre)  # bit for bit
    assert torch.equal(state["code_steps"], model.code_steps)
    for name in checkpoints.MOMENT_BUFFERS:
        assert torch.equal(state[name], getattr(model, name).bfloat16())  # round to nearest, chunk by chunk
    assert torch.equal(state["decoder.base.weight"], model.decoder.base.weight)  # the rest is written as usual
    assert state._metadata == model.state_dict()._metadata  # module versions, which load_state_dict passes on

    restored = tiny_model(seed=1)  # other initial codes and weights
    restored.load_state_dict(state)
    assert restored.codes_pre.dtype == restored.code_exp_avg.dtype == torch.float32
    assert torch.equal(restored.codes_pre, model.codes_pre)
    assert torch.equal(restored.code_steps, model.code_steps)
    for name in checkpoints.MOMENT_BUFFERS:
        assert torch.equal(getattr(restored, name), getattr(model, name).bfloat16().float())
        # the rounding is what bfloat16 allows (8 significant bits: relative error <= 2^-8), and exp_avg_sq kept its
        # (tiny) magnitudes
        original = getattr(model, name)
        assert bool(((getattr(restored, name) - original).abs() <= original.abs() * 2.0**-8).all())
    visited = model.code_steps > 0
    assert bool((restored.code_exp_avg_sq[visited] > 0).all())


def test_float32_moments_resume_the_optimiser_bit_for_bit_and_bfloat16_within_its_rounding(tmp_path):
    model = trained_model()
    save(model, tmp_path / "f32.ckpt", moments="float32")
    save(model, tmp_path / "bf16.ckpt", moments="bfloat16")
    exact, rounded = tiny_model(seed=1), tiny_model(seed=2)
    exact.load_state_dict(load(tmp_path / "f32.ckpt")["pipeline"])
    rounded.load_state_dict(load(tmp_path / "bf16.ckpt")["pipeline"])

    objects = torch.tensor([2, 6, 0])  # often visited, never visited, visited twice
    grad = torch.randn(3, *model.code_shape, generator=torch.Generator().manual_seed(7))
    before = model.codes_pre[objects].clone()
    for m in (model, exact, rounded):
        m.code_adam_step(objects, grad, lr=LR)
    assert torch.equal(exact.codes_pre, model.codes_pre)  # the control: float32 moments change nothing
    update = model.codes_pre[objects] - before
    deviation = rounded.codes_pre[objects] - model.codes_pre[objects]
    assert float(deviation.abs().max()) > 0  # the rounding is visible ...
    # ... and per object below 0.8 % of the update (2^-8 rounding of exp_avg, 2^-9 of sqrt(exp_avg_sq)); none for an
    # unvisited object, whose moments are zero
    relative = deviation.flatten(1).norm(dim=1) / update.flatten(1).norm(dim=1)
    assert bool((relative < 2.0**-7).all()) and float(relative[1]) == 0.0


def test_checkpoint_shrinks_by_the_moments_half_of_their_bytes(tmp_path):
    model = trained_model()
    save(model, tmp_path / "new.ckpt")
    atomic_torch_save({"step": 4, "pipeline": model.state_dict()}, tmp_path / "old.ckpt")  # the former format
    elements = NUM_OBJECTS * CODE_NUMEL  # 7 x 384 = 2688 per buffer
    new_sizes = record_sizes(tmp_path / "new.ckpt")
    old_sizes = record_sizes(tmp_path / "old.ckpt")
    assert old_sizes == {"codes_pre": 4 * elements, "code_exp_avg": 4 * elements, "code_exp_avg_sq": 4 * elements}
    assert new_sizes == {"codes_pre": 4 * elements, "code_exp_avg": 2 * elements, "code_exp_avg_sq": 2 * elements}
    assert code_state_bytes(NUM_OBJECTS, CODE_NUMEL, "bfloat16") == 8 * elements == 21504
    assert code_state_bytes(NUM_OBJECTS, CODE_NUMEL, "float32") == 12 * elements
    # the whole files differ by those 2 x 2 x 2688 bytes, up to the 64-byte alignment of the two records
    saved = (tmp_path / "old.ckpt").stat().st_size - (tmp_path / "new.ckpt").stat().st_size
    assert abs(saved - 4 * elements) < 2 * 64
    # SRN cars (2458 objects, 3 x 6 x 128 x 128): 8.70 GB -> 5.80 GB
    assert code_state_bytes(2458, 3 * 6 * 128 * 128, "float32") == 8_698_724_352
    assert code_state_bytes(2458, 3 * 6 * 128 * 128, "bfloat16") == 5_799_149_568


def test_checkpoints_written_before_load_unchanged(tmp_path):
    """The former format (plain float32 buffers of ``state_dict()``, written by ``torch.save``) still loads exactly."""
    model = trained_model()
    torch.save({"step": 4, "pipeline": model.state_dict()}, tmp_path / "step-000000004.ckpt")
    restored = tiny_model(seed=1)
    restored.load_state_dict(load(tmp_path / "step-000000004.ckpt")["pipeline"])
    for name in (*checkpoints.CODE_BUFFERS, "code_steps", "diffusion_norm"):
        assert torch.equal(getattr(restored, name), getattr(model, name)), name


def test_a_failure_in_the_middle_of_the_codes_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    folder = tmp_path / "nerfstudio_models"
    folder.mkdir()
    model = trained_model()
    save(model, folder / "step-000000004.ckpt")
    saved_codes = model.codes_pre.clone()
    model.code_adam_step(torch.tensor([1, 6]), torch.ones(2, *model.code_shape), lr=LR)  # training goes on

    chunks_written = []
    real_chunks = checkpoints.gathered_chunks

    def dying_chunks(buffer, shard, chunk_objects):
        for chunk in real_chunks(buffer, shard, chunk_objects):
            yield chunk
            chunks_written.append(chunk.shape[0])
            if len(chunks_written) == 2:  # the first buffer (codes_pre) half written
                raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "gathered_chunks", dying_chunks)
    with pytest.raises(KeyboardInterrupt):
        save(model, folder / "step-000000008.ckpt")
    monkeypatch.setattr(checkpoints, "gathered_chunks", real_chunks)
    assert chunks_written == [3, 3]

    # the interrupted file never landed; the previous checkpoint is the newest complete one and loads, exactly
    assert sorted(p.name for p in folder.iterdir()) == ["step-000000004.ckpt"]
    assert len(list(partial_dir_of(folder).iterdir())) == 1
    assert latest_complete_step(folder) == 4
    resumed = tiny_model(seed=1)
    resumed.load_state_dict(load(folder / "step-000000004.ckpt")["pipeline"])
    assert torch.equal(resumed.codes_pre, saved_codes)
    assert not torch.equal(resumed.codes_pre, model.codes_pre)

    # and the next save completes
    save(model, folder / "step-000000008.ckpt")
    assert latest_complete_step(folder) == 8
    assert torch.equal(load(folder / "step-000000008.ckpt")["pipeline"]["codes_pre"], model.codes_pre)


def test_streamed_pieces_of_the_wrong_size_are_an_error(tmp_path):
    from ns_diffusion_methods.engine.trainer import StreamedTensor

    short = StreamedTensor((4, 3), torch.float32, lambda: iter([torch.zeros(3, 3)]))
    with pytest.raises(RuntimeError, match="yielded 36 bytes, expected 48"):
        atomic_torch_save({"x": short}, tmp_path / "folder" / "step-000000001.ckpt")
    assert not (tmp_path / "folder" / "step-000000001.ckpt").exists()


def test_torch_without_streaming_writes_the_same_checkpoint_whole(tmp_path, monkeypatch):
    from ns_diffusion_methods.engine import trainer

    model = trained_model()
    (tmp_path / "streamed").mkdir()
    (tmp_path / "whole").mkdir()
    save(model, tmp_path / "streamed" / "step-000000004.ckpt")
    monkeypatch.setattr(trainer, "streaming_supported", lambda: False)  # torch < 2.6
    save(model, tmp_path / "whole" / "step-000000004.ckpt")
    streamed = load(tmp_path / "streamed" / "step-000000004.ckpt")["pipeline"]
    whole = load(tmp_path / "whole" / "step-000000004.ckpt")["pipeline"]
    assert streamed.keys() == whole.keys()
    for name in streamed:
        assert streamed[name].dtype == whole[name].dtype and torch.equal(streamed[name], whole[name]), name
