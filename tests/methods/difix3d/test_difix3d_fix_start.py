"""Where fixing starts: after the base reconstruction has trained when a difix3d method trains from scratch (splats
keep densifying until then), at once after a trained nerfacto/splatfacto checkpoint (in test_difix3d_methods.py), and
wherever --pipeline.fix-start-step says."""

from __future__ import annotations

import harness
import pytest
from methods.difix3d.test_difix3d_methods import FAST, TINY_FIXER, checkpoint_state, pseudo_views_of

from ns_diffusion_methods.methods.difix3d.pipeline import (
    densification_end,
    from_scratch_fix_start_step,
    round_up,
)

ONE_VIEW = ["--pipeline.max-targets", "1", "--pipeline.fix-batch-size", "1", *TINY_FIXER]


def test_round_up():
    assert [round_up(step, 150) for step in (0, 1, 149, 150, 151, 750)] == [0, 150, 150, 150, 300, 750]


def test_from_scratch_rule_on_the_presets():
    """Half the run trains the base (paper: 30k base + 30k fixing); splats wait for the end of densification."""
    from ns_diffusion_methods.methods.difix3d import config as presets

    def derived(trainer) -> int:
        pipeline = trainer.pipeline
        assert pipeline.fix_start_step is None  # every preset derives it
        return from_scratch_fix_start_step(trainer.max_num_iterations, pipeline.steps_per_fix,
                                           densification_end(pipeline.model))[0]

    assert derived(presets.difix3d_nerfacto_config()) == 15000  # 30000 / 2
    assert derived(presets.difix3d_splat_config()) == 15000  # = stop_split_at
    assert derived(presets.difix3d_nerfacto_small_config()) == 750  # 1500 / 2, a multiple of 150
    assert derived(presets.difix3d_splat_small_config()) == 1050  # stop_split_at 1000, rounded up to 7 x 150

    assert "densification ends at step 1000" in from_scratch_fix_start_step(1500, 150, 1000)[1]
    splat = presets.difix3d_splat_small_config().pipeline.model
    splat.densify_during_fixing = True  # densification goes on while fixing: no reason to wait for its end
    assert densification_end(splat) is None
    assert from_scratch_fix_start_step(101, 20, 30)[0] == 60  # half (51) rounded up to 3 x 20
    assert from_scratch_fix_start_step(1, 150)[0] == 150  # a 1-step run never fixes its untrained model at step 0


def test_nerfacto_from_scratch_fixes_only_after_half_the_run(sparse_views_capture, tmp_path, capsys):
    config = harness.train("difix3d-nerfacto-small", sparse_views_capture, tmp_path,
                           [*FAST["difix3d-nerfacto-small"], "--pipeline.steps-per-fix", "2", *ONE_VIEW],
                           max_num_iterations=8)
    assert "fixing starts at step 4 (training from scratch" in " ".join(capsys.readouterr().out.split())
    views = pseudo_views_of(checkpoint_state(config))
    assert int(views.rounds) == 2 and int(views.last_round_step) == 6  # rounds at 4 and 6 only (not 0, 2)
    assert views.images.updates.tolist() == [2]


#: splat densification within a few steps: every visible Gaussian grows (gradient threshold 0) at steps 14 and 16
#: (splatfacto refines every 2 steps after a pause of num_train_data + refine_every = 14 steps), none after step 18
DENSIFY = ["--pipeline.model.warmup-length", "1", "--pipeline.model.refine-every", "2",
           "--pipeline.model.reset-alpha-every", "100", "--pipeline.model.densify-grad-thresh", "0",
           "--pipeline.model.stop-split-at", "18"]


def test_splats_densify_until_fixing_starts(sparse_views_capture, tmp_path, capsys):
    config = harness.train("difix3d-splat-small", sparse_views_capture, tmp_path,
                           [*FAST["difix3d-splat-small"], *DENSIFY, "--pipeline.steps-per-fix", "3", *ONE_VIEW],
                           max_num_iterations=20)
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "fixing starts at step 18 (training from scratch: after densification ends at step 18" in out
    state = checkpoint_state(config)
    views = pseudo_views_of(state)
    assert int(views.rounds) == 1 and int(views.last_round_step) == 18  # the only round: not at step 0
    count = state["pipeline"]["_model.gauss_params.means"].shape[0]
    assert count > 500, count  # densified from the 500 random Gaussians before fixing started


def test_a_negative_fix_start_step_is_refused():
    from ns_diffusion_methods.methods.difix3d.pipeline import Difix3DPipelineConfig

    with pytest.raises(ValueError, match="fix-start-step"):
        Difix3DPipelineConfig(fix_start_step=-1)
