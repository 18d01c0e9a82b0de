"""``ns-train ssdnerf-small`` on the synthetic objects, resume, ``ns-eval``'s 1-/2-view JSON, guided sampling and
``ns-diffusion sample ssdnerf`` (tiny overrides; the small preset itself is what users run)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import harness
import pytest
import torch
from rich.console import Console

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow

#: the small preset, shrunk further so that the whole test module runs in well under a minute on 2 cores
TINY_FLAGS = [
    "--pipeline.model.code-resolution", "8",
    "--pipeline.model.unet.block-out-channels", "16", "32",
    "--pipeline.model.unet.attention-resolutions", "4",
    "--pipeline.model.unet.attention-head-dim", "8",
    "--pipeline.model.unet.norm-num-groups", "8",
    "--pipeline.model.renderer.num-samples", "12",
    "--pipeline.datamanager.objects-per-batch", "4",
    "--pipeline.datamanager.rays-per-object", "64",
    "--pipeline.inner-steps", "2", "2",
    "--pipeline.inner-steps-milestones", "100",
    "--pipeline.eval-ddim-steps", "3",
    "--pipeline.eval-rays-per-step", "256",
    "--pipeline.finetune-outer-steps", "1", "1",
    "--pipeline.finetune-inner-steps", "2",
    "--steps-per-eval-batch", "3",
    "--steps-per-eval-image", "3",
    "--steps-per-save", "100",
    "--pipeline.eval-lpips", "False",
]
ITERATIONS = 6


@pytest.fixture(scope="module")
def trained(objects_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ssdnerf")
    return harness.train("ssdnerf-small", objects_dataset, out, flags=TINY_FLAGS, max_num_iterations=ITERATIONS,
                         dataparser=["srn-data"])


def recording_console() -> Console:
    """A console that keeps what it shows, as a terminal would show it (progress bars are drawn)."""
    return Console(record=True, force_terminal=True, width=160, file=io.StringIO())


def _model_state(config_path: Path) -> dict:
    return torch.load(harness.latest_checkpoint(config_path), map_location="cpu", weights_only=False)["pipeline"]


def test_training_checkpoints_the_per_object_optimizer_state(trained):
    state = _model_state(trained)
    steps = state["_model.code_steps"]
    # 6 iterations x 4 objects x K_in 2 code steps, spread over the 8 training objects
    assert int(steps.sum()) == ITERATIONS * 4 * 2
    visited = steps > 0
    assert bool((state["_model.code_exp_avg_sq"][visited] > 0).all())
    assert not bool(state["_model.code_exp_avg"][~visited].abs().sum() > 0) if (~visited).any() else True
    assert float(state["_model.diffusion_norm"]) < 1.0  # the loss-normalising EMA moved and was saved
    assert "_model.unet_ema.conv_in.weight" in state and "_model.decoder_ema.base.weight" in state


def test_resume_continues_every_objects_optimizer(trained, objects_dataset, tmp_path):
    before = _model_state(trained)
    resumed = harness.train("ssdnerf-small", objects_dataset, tmp_path, dataparser=["srn-data"],
                            flags=TINY_FLAGS + ["--load-dir", str(trained.parent / "nerfstudio_models")],
                            max_num_iterations=2)
    after = _model_state(resumed)
    # the restored step counts keep counting (a fresh optimiser state would restart from zero)
    assert bool((after["_model.code_steps"] >= before["_model.code_steps"]).all())
    assert int(after["_model.code_steps"].sum()) == int(before["_model.code_steps"].sum()) + 2 * 4 * 2
    untouched = after["_model.code_steps"] == before["_model.code_steps"]
    assert torch.equal(after["_model.codes_pre"][untouched], before["_model.codes_pre"][untouched])


def test_ns_eval_writes_the_one_and_two_view_protocol(trained, tmp_path, monkeypatch):
    from ns_diffusion_methods.methods.ssdnerf import pipeline as ssdnerf_pipeline

    console = recording_console()
    monkeypatch.setattr(ssdnerf_pipeline, "CONSOLE", console)
    result = harness.evaluate(trained, output_path=tmp_path / "eval.json", render_output_path=tmp_path / "renders")
    shown = console.export_text()  # progress per object and per step of each setting
    for text in ("ssdnerf 1v: objects", "ssdnerf 2v: objects", "guided DDIM steps", "fine-tuning steps"):
        assert text in shown, text
    assert json.loads((tmp_path / "eval.json").read_text()) == result
    metrics = result["results"]
    assert metrics["num_objects"] == 2
    for k in (1, 2):
        for key in ("psnr", "ssim"):
            assert f"{key}_{k}v" in metrics and f"{key}_{k}v_std" in metrics
        # 12 views per test object: all but the input views are scored
        assert metrics[f"num_images_{k}v"] == 2 * (12 - k)
    assert 0 < metrics["psnr_1v"] < 60 and 0 < metrics["ssim_2v"] <= 1
    assert len(list((tmp_path / "renders").glob("1v_*.png"))) == 2 * 11


def test_guided_sampling_lowers_the_input_view_error(trained):
    """Guided DDIM fits the input view better than unguided DDIM from the same noise."""
    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.methods.ssdnerf.reconstruction import guided_sample, input_rays

    _, pipeline, _, _ = eval_setup(trained, test_mode="test")
    model, dm = pipeline.model, pipeline.datamanager
    objects = [dm.eval_object(i, num_inputs=1) for i in range(dm.num_eval_objects)]
    rays = input_rays(objects, torch.Generator().manual_seed(0))
    noise = torch.randn(len(objects), 3 * model.config.code_channels, 8, 8, generator=torch.Generator().manual_seed(1))

    def input_view_error(code):
        out = model.render_rays_chunked(code, rays.origins, rays.directions, decoder=model.eval_decoder)
        return float((out["rgb"] - rays.target).square().mean())

    unguided = guided_sample(model, None, 10, 3.2, 1024, num_objects=len(objects), noise=noise)
    guided = guided_sample(model, rays, 10, 3.2, 1024, noise=noise)
    assert input_view_error(guided) < 0.8 * input_view_error(unguided)


def test_sample_command_writes_turntables(trained, tmp_path, monkeypatch):
    from ns_diffusion_methods.cli.main import main
    from ns_diffusion_methods.methods.ssdnerf import commands

    console = recording_console()
    monkeypatch.setattr(commands, "CONSOLE", console)
    code = main(["sample", "ssdnerf", "--load-config", str(trained), "--num", "2", "--output", str(tmp_path),
                 "--num-steps", "2", "--num-views", "3"])
    assert code == 0
    shown = console.export_text()
    for text in ("Generating 2 objects", "DDIM steps (2 objects at once)", "Rendering 2 turntables", "2/2"):
        assert text in shown, text
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "sample_001.gif").is_file()
    assert len(list((tmp_path / "sample_000").glob("frame_*.png"))) == 3
    assert torch.load(tmp_path / "codes.pt").shape == (2, 3, 6, 8, 8)
