"""Runs with random-weight (``tiny``) diffusion models say so: on the console at their start, in ``config.yml``, and in
``ns-eval``'s JSON, so nobody mistakes their results for the method's.

Only pretrained-weight slots count: mald-nerf's inpainter and difix3d's fixer. The U-Nets of ssdnerf and
renderdiffusion are trained by the run itself, so their presets (and their ``-small`` versions with small U-Nets) have
no untrained model.
"""

from __future__ import annotations

import harness
import pytest
import yaml
from failure_helpers import FAST_MALD_NERF, LDM_INPAINTER

from ns_diffusion_methods.diffusion.untrained import untrained_models

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow

#: method -> (flag setting the pretrained slot to tiny, further flags for a fast run)
RUNS = {
    "mald-nerf-small": ("--pipeline.inpainter.model", [*FAST_MALD_NERF, *LDM_INPAINTER,
                                                       "--pipeline.inpainter.num-inference-steps", "2"]),
    "difix3d-nerfacto-small": ("--pipeline.fixer.model", [
        "--vis", "tensorboard",
        "--pipeline.max-targets", "1", "--pipeline.datamanager.train-num-rays-per-batch", "64",
        "--pipeline.model.num-levels", "4", "--pipeline.model.log2-hashmap-size", "12",
        "pipeline.fixer:difix"]),  # the backend whose flag follows
}


@pytest.mark.parametrize("method", list(RUNS))
def test_a_run_with_tiny_models_says_so_at_start_in_its_config_and_in_ns_eval(method, object_removal_capture,
                                                                               sparse_views_capture, tmp_path, capsys):
    flag, flags = RUNS[method]
    capture = object_removal_capture if method.startswith("mald") else sparse_views_capture
    config_path = harness.train(method, capture, tmp_path / "outputs", flags=[*flags, flag, "tiny"],
                                max_num_iterations=1)
    expected = [f"{flag} tiny"]

    console = capsys.readouterr().out
    assert "Warning: Untrained diffusion models:" in console and f"{flag} tiny" in console
    # at the start: before nerfstudio's dataparser reads the capture
    assert console.index("Untrained diffusion models") < console.index("Auto image downscale factor")

    saved = config_path.read_text()
    assert "untrained_models:" in saved
    assert yaml.load(saved, Loader=yaml.Loader).untrained_models == expected

    results = harness.evaluate(config_path, tmp_path / "eval.json")["results"]
    assert results["untrained_models"] == expected
    assert results["psnr"] == results["psnr"]  # the metrics themselves are still there


def test_presets_have_no_untrained_model_until_a_slot_is_set_to_tiny():
    from nerfstudio.plugins.registry import discover_methods

    methods, _descriptions = discover_methods()
    ours = {name: config for name, config in methods.items()
            if type(config.pipeline).__module__.startswith("ns_diffusion_methods")}
    assert {"mald-nerf", "difix3d-splat-small", "ssdnerf-small", "renderdiffusion-small"} <= set(ours)
    for name, config in ours.items():
        assert untrained_models(config.pipeline) == [], name
        assert config.untrained_models == [], name
    config = ours["difix3d-splat-small"].pipeline
    config.fixer.model = "tiny"
    assert untrained_models(config) == ["--pipeline.fixer.model tiny"]
