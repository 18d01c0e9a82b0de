"""Atomic checkpoints: an interrupted write never replaces or shadows the last good checkpoint."""

import pytest
import torch

from ns_diffusion_methods.engine import trainer as engine


def test_interrupted_save_leaves_previous_checkpoint_as_latest(tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "nerfstudio_models"
    ckpt_dir.mkdir()
    engine.atomic_torch_save({"step": 5}, ckpt_dir / "step-000000005.ckpt")

    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")  # what a kill in the middle of torch.save leaves behind
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        engine.atomic_torch_save({"step": 10}, ckpt_dir / "step-000000010.ckpt")
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["step-000000005.ckpt"]
    assert engine.latest_complete_step(ckpt_dir) == 5
    assert torch.load(ckpt_dir / "step-000000005.ckpt")["step"] == 5


def test_latest_complete_step_ignores_other_files(tmp_path):
    (tmp_path / "step-000000003.ckpt").write_bytes(b"")
    (tmp_path / "step-000000009.ckpt.tmp").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert engine.latest_complete_step(tmp_path) == 3
