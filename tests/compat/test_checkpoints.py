"""nerfstudio checkpoints (numpy float64 learning rates inside) load under torch >= 2.6 with safe loading kept on."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ns_diffusion_methods.compat import enable_for_package_runs

enable_for_package_runs()  # what the package's runs (trainer, pipelines, ns-diffusion) turn on when they start


def _nerfstudio_like_checkpoint() -> dict:
    """What nerfstudio 1.1.5's Trainer.save_checkpoint writes: numpy scalars from its schedulers included."""
    param = torch.nn.Parameter(torch.randn(3))
    optimizer = torch.optim.Adam([param], lr=np.float64(1e-2))
    param.grad = torch.ones(3)
    optimizer.step()
    return {"step": 7, "pipeline": {"_model.w": param.detach().clone()},
            "optimizers": {"fields": optimizer.state_dict()},
            "schedulers": {"fields": {"_last_lr": [np.float64(1e-3)], "base_lrs": [np.float64(1e-2)]}},
            "scalers": {}}


def test_checkpoint_round_trip_with_default_torch_load(tmp_path):
    path = tmp_path / "step-000000007.ckpt"
    ckpt = _nerfstudio_like_checkpoint()
    torch.save(ckpt, path)
    loaded = torch.load(path, map_location="cpu")  # torch >= 2.6: weights_only=True by default
    assert loaded["step"] == 7
    assert torch.equal(loaded["pipeline"]["_model.w"], ckpt["pipeline"]["_model.w"])
    assert loaded["schedulers"]["fields"]["_last_lr"][0] == np.float64(1e-3)
    assert loaded["optimizers"]["fields"]["param_groups"][0]["lr"] == np.float64(1e-2)


@pytest.mark.skipif(tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 6),
                    reason="torch < 2.6 does not load weights-only by default")
def test_without_the_plugin_torch_refuses_and_safe_loading_stays_on(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(_nerfstudio_like_checkpoint(), path)
    # a fresh interpreter that never imports the plugin: the stock failure nerfstudio users hit
    code = f"import torch; torch.load({str(path)!r}, map_location='cpu')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "weights_only" in result.stderr
    # with the plugin, arbitrary objects are still refused: only numpy's scalar types were allow-listed
    evil = tmp_path / "evil.pt"
    code = textwrap.dedent(f"""
        import argparse, torch
        torch.save({{"x": argparse.Namespace(a=1)}}, {str(evil)!r})
        import ns_diffusion_methods
        try:
            torch.load({str(evil)!r})
        except Exception as err:
            print("refused:", type(err).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "refused" in result.stdout, result.stderr
