"""What a mald-nerf run says and does when training starts, before its first iteration: one plan line (inpainter,
scene customisation, first inpainting, dataset updates or why there are none), then the customisation and the first
inpainting; and the dataset updates between iterations, none past the run's last step."""

from __future__ import annotations

import torch

from .conftest import TINY_LDM, build_pipeline

#: U = 5, K = 2: updates at steps 5, 10 and 15 (t = 980, 499 and 300 of T = 1000)
SCHEDULE = ["--pipeline.update-every", "5", "--pipeline.num-updates", "2"]
FAST_LDM = [*TINY_LDM, "--pipeline.inpainter.num-inference-steps", "2"]


def _said(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def test_the_ldm_plan_then_customisation_and_the_first_inpainting_from_noise(object_removal_capture, tmp_path,
                                                                             capsys):
    cache = ["--pipeline.inpainter.customization-cache-dir", str(tmp_path / "lora")]
    pipeline = build_pipeline(object_removal_capture, [*SCHEDULE, *FAST_LDM, *cache])
    capsys.readouterr()
    pipeline.start_training(0, 12)
    out = _said(capsys)
    # the plan first, then the work it announced
    assert out.index("MALD-NeRF plan:") < out.index("Scene customisation of tiny") < out.index("First inpainting")
    plan = out[out.index("MALD-NeRF plan:"):out.index("Scene customisation of tiny")]
    assert "inpainter ldm tiny (2 DDIM steps, guidance 7.5)" in plan
    assert "scene customisation: a LoRA is trained now (2 steps, then cached)" in plan
    assert "first inpainting: from pure noise, before step 0" in plan
    assert ("dataset updates: 2 at steps 5, 10 (re-inpainting from renders noised to t = 980, 499 of T = 1000); "
            "1 of the 3 dataset updates (steps 5, 10, 15) come after the last training step 11") in plan
    assert "First inpainting of the training views (from pure noise)" in out
    dm = pipeline.datamanager
    assert bool(dm.inpainted.filled.all()) and dm.inpainted.last_step.tolist() == [0] * dm.num_train_images
    assert pipeline.config.inpainter.lora_path is not None
    pipeline.start_training(0, 12)  # once only
    assert "MALD-NeRF plan" not in _said(capsys)

    # the next run on the same data reuses the cached LoRA, and says so first
    again = build_pipeline(object_removal_capture, [*SCHEDULE, *FAST_LDM, *cache])
    capsys.readouterr()
    assert f"the cached LoRA {pipeline.config.inpainter.lora_path} is reused" in " ".join(again.plan(0, 12).split())


def test_a_resumed_run_keeps_its_images_and_updates_between_iterations_until_its_last_step(object_removal_capture,
                                                                                          capsys):
    pipeline = build_pipeline(object_removal_capture,
                              [*SCHEDULE, *FAST_LDM, "--pipeline.inpainter.customize", "False"])
    dm = pipeline.datamanager
    assert pipeline.maybe_update_dataset(0) is True  # as if a checkpoint held the first inpainting, and nothing else
    capsys.readouterr()
    pipeline.start_training(5, 10)  # the final checkpoint of a run of steps 0..4: the update due at 5 is missing
    out = _said(capsys)
    assert "scene customisation: off (--pipeline.inpainter.customize False)" in out
    assert "first inpainting: restored from the checkpoint" in out
    assert "First inpainting of the training views" not in out
    assert ("dataset updates: 1 at step 5 (re-inpainting from renders noised to t = 980 of T = 1000); 2 of the 3 "
            "dataset updates (steps 5, 10, 15) come after the last training step 9") in out
    assert "Dataset update 1/3 (k = 0)" in out  # the update due at step 5, before its iteration
    assert dm.inpainted.last_step.tolist() == [5] * dm.num_train_images
    assert pipeline.update_after_iteration(5) is False  # nothing due at step 6
    assert pipeline.update_after_iteration(9) is False  # step 10 is past the run's last step, 9
    pipeline._end_step = 11
    assert pipeline.update_after_iteration(9) is True  # the update due at step 10 runs after iteration 9
    assert dm.inpainted.last_step.tolist() == [10] * dm.num_train_images


def test_opencv_says_classical_first_inpainting_and_no_updates_at_the_start(object_removal_capture, capsys):
    pipeline = build_pipeline(object_removal_capture, ["pipeline.inpainter:opencv"])  # mald-nerf-small's default
    capsys.readouterr()
    pipeline.start_training(0, 1000)
    out = _said(capsys)
    assert "inpainter opencv (telea, radius 5)" in out
    assert "scene customisation: not applicable (the opencv inpainter has no weights to customise)" in out
    assert "first inpainting: classical OpenCV inpainting (Telea's fast marching, no noise), before step 0" in out
    assert ("dataset updates: none (the opencv inpainter does not start from renders: an update would repeat the "
            "first inpainting)") in out
    assert "First inpainting of the training views (classical OpenCV inpainting" in out
    assert "from pure noise" not in out and "noise level" not in out
    before = pipeline.datamanager.inpainted.images.clone()
    for step in (199, 399):  # the updates of mald-nerf-small would be due at steps 200 and 400: nothing, silently
        assert pipeline.update_after_iteration(step) is False
    assert _said(capsys) == ""
    assert torch.equal(pipeline.datamanager.inpainted.images, before)


def test_the_ablation_and_the_oracle_say_why_there_are_no_updates(object_removal_capture, tmp_path, capsys):
    from ns_diffusion_methods.methods.mald_nerf.benchmark import write_oracle

    ldm = build_pipeline(object_removal_capture, ["--pipeline.dataset-update", "False", *FAST_LDM,
                                                  "--pipeline.inpainter.customize", "False"])
    assert "dataset updates: none (--pipeline.dataset-update False)" in " ".join(ldm.plan(0, 1000).split())

    oracle_file = tmp_path / "oracle.pt"
    write_oracle(object_removal_capture, oracle_file, seed=0, colour_shift=0.1, jitter_px=1)
    oracle = build_pipeline(object_removal_capture,
                            ["pipeline.inpainter:oracle", "--pipeline.inpainter.oracle-file", str(oracle_file)])
    capsys.readouterr()
    oracle.start_training(0, 1000)
    out = _said(capsys)
    assert f"inpainter oracle ({oracle_file})" in out
    assert "first inpainting: the oracle's precomputed fills, before step 0" in out
    assert "dataset updates: none (the oracle inpainter does not start from renders" in out
    assert bool(oracle.datamanager.inpainted.filled.all())
