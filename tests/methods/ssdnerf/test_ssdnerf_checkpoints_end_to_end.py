"""A real ``ns-train ssdnerf-small`` run writes its codes exactly and its moments in bfloat16; nerfstudio's loader
(``eval_setup``: what ``ns-eval``, ``ns-render`` and ``ns-viewer`` use) and ``--load-dir`` load such checkpoints and
checkpoints in the former format (plain float32 buffers)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import harness
import pytest
import torch
from test_ssdnerf_end_to_end import TINY_FLAGS

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow

#: the end-to-end tests' tiny preset; later flags win: 8 objects in chunks of 3, 3 and 2, no evaluation
FLAGS = [
    *TINY_FLAGS,
    "--pipeline.checkpoint-chunk-objects", "3",
    "--steps-per-eval-batch", "0", "--steps-per-eval-image", "0", "--steps-per-eval-all-images", "0",
]
CODE_KEYS = ("_model.codes_pre", "_model.code_exp_avg", "_model.code_exp_avg_sq", "_model.code_steps")


@pytest.fixture(scope="module")
def trained(objects_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ssdnerf-checkpoints")
    return harness.train("ssdnerf-small", objects_dataset, out, flags=FLAGS, max_num_iterations=3,
                         dataparser=["srn-data"])


def pipeline_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu")["pipeline"]


def loaded_codes(config_path: Path, output_dir: Optional[Path] = None) -> dict:
    """The per-object buffers of the pipeline that nerfstudio's ``eval_setup`` builds and loads (from the run moved
    to ``output_dir``, if given)."""
    from nerfstudio.utils.eval_utils import eval_setup

    def moved(config):
        if output_dir is not None:
            config.output_dir = output_dir
        return config

    _, pipeline, _, _ = eval_setup(config_path, test_mode="inference", update_config_callback=moved)
    return {key: getattr(pipeline.model, key[len("_model."):]).clone() for key in CODE_KEYS}


def test_training_writes_exact_codes_and_bfloat16_moments_that_eval_setup_loads(trained):
    state = pipeline_state(harness.latest_checkpoint(trained))
    assert state["_model.codes_pre"].dtype == torch.float32
    assert state["_model.code_exp_avg"].dtype == state["_model.code_exp_avg_sq"].dtype == torch.bfloat16
    assert int(state["_model.code_steps"].sum()) == 3 * 4 * 2  # 3 iterations x 4 objects x 2 code steps
    loaded = loaded_codes(trained)
    assert torch.equal(loaded["_model.codes_pre"], state["_model.codes_pre"])
    assert loaded["_model.code_exp_avg"].dtype == torch.float32
    for key in CODE_KEYS[1:]:
        assert torch.equal(loaded[key], state[key].to(loaded[key].dtype)), key


def test_checkpoints_in_the_former_format_load_and_resume(trained, objects_dataset, tmp_path):
    """A checkpoint written before (``state_dict()`` as is, float32 moments) loads through ``eval_setup`` and resumes
    with ``--load-dir``."""
    checkpoint = harness.latest_checkpoint(trained)
    saved = torch.load(checkpoint, map_location="cpu")
    old = {**saved, "pipeline": dict(saved["pipeline"])}
    g = torch.Generator().manual_seed(0)
    for key in ("_model.code_exp_avg", "_model.code_exp_avg_sq"):  # full float32 moments, not bfloat16 values
        moments = old["pipeline"][key].float()
        old["pipeline"][key] = moments * (1 + 1e-3 * torch.rand(moments.shape, generator=g))
    output_dir = tmp_path / "old-outputs"
    run = output_dir.joinpath(*trained.parent.parts[-3:])  # EXPERIMENT/METHOD/TIMESTAMP, as config.yml names it
    shutil.copytree(trained.parent, run)
    torch.save(old, run / "nerfstudio_models" / checkpoint.name)  # as nerfstudio's own trainer wrote it

    loaded = loaded_codes(run / "config.yml", output_dir)
    for key in CODE_KEYS:
        assert torch.equal(loaded[key], old["pipeline"][key]), key  # exactly, moments included

    resumed = harness.train("ssdnerf-small", objects_dataset, tmp_path / "resumed", dataparser=["srn-data"],
                            flags=FLAGS + ["--load-dir", str(run / "nerfstudio_models")], max_num_iterations=1)
    after = pipeline_state(harness.latest_checkpoint(resumed))
    steps_before = old["pipeline"]["_model.code_steps"]
    visited = after["_model.code_steps"] != steps_before
    assert int(visited.sum()) == 4 and torch.equal(after["_model.code_steps"][visited], steps_before[visited] + 2)
    assert torch.equal(after["_model.codes_pre"][~visited], old["pipeline"]["_model.codes_pre"][~visited])
