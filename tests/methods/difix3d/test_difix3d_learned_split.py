"""The split of ``difix3d-learned``: scored scenes never reach fixer training, evaluation images never reach ns-train.

Fast: tiny captures (16 px) and hand-made pair files; nothing is trained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ns_diffusion_methods.benchmark.runner import find_definition, load_definition
from ns_diffusion_methods.errors import DataError, UserFacingError
from ns_diffusion_methods.methods.difix3d.learned_benchmark import (
    capture_images,
    check_no_leak,
    pair_images,
    plan_split,
    summary_rows,
    without_references,
    write_captures,
)

TINY_CAPTURE = {"image_size": 16, "num_views": 3, "num_eval_views": 2}


def _plan(tmp_path: Path, **seeds):
    params = {"fixer_seeds": [101, 102], "validation_seeds": [104], "test_seeds": [1, 2], **seeds}
    plan = plan_split(params, tmp_path)
    write_captures(plan, TINY_CAPTURE)
    return plan


def _pairs_like_the_benchmark(plan, folder: Path) -> Path:
    """A pairs file built from what the benchmark's pair maker reads: each pair source's evaluation and training
    images (targets), a degraded copy (renders) and its nearest training image (references)."""
    from ns_diffusion_methods.data.images import load_image, save_image

    folder.mkdir(parents=True)
    data = {"train": {}, "test": {}}
    for scene in plan.pair_sources:
        train_files = capture_images(scene.capture, "train")
        for split in ("test", "train"):
            for path in capture_images(scene.capture, split):
                name = f"{scene.role}-{scene.seed}-{path.stem}"
                clean = load_image(path)
                save_image(clean, folder / f"{name}_clean.png")
                save_image((clean * 0.5 + 0.25).clamp(0, 1), folder / f"{name}_degraded.png")
                shutil.copy(train_files[0], folder / f"{name}_ref.png")
                entry = {"image": f"{name}_degraded.png", "target_image": f"{name}_clean.png",
                         "ref_image": f"{name}_ref.png"}
                data["test" if scene.role == "validation" else "train"][name] = entry
    (folder / "data.json").write_text(json.dumps(data))
    return folder / "data.json"


def test_the_shipped_definition_keeps_the_scored_seeds_apart(tmp_path):
    spec = load_definition(find_definition("difix3d-learned"))
    plan = plan_split(spec["params"], tmp_path)
    assert len(plan.test) >= 3 and plan.fixer
    fixer_seeds = {s.seed for s in plan.pair_sources}
    assert fixer_seeds.isdisjoint(s.seed for s in plan.test)
    assert {s.capture for s in plan.pair_sources}.isdisjoint(s.capture for s in plan.test)


@pytest.mark.parametrize("seeds", [{"test_seeds": [1, 101]}, {"validation_seeds": [2]},
                                   {"fixer_seeds": [104]}, {"test_seeds": [1, 1]}, {"test_seeds": []}])
def test_overlapping_or_missing_seeds_are_refused(tmp_path, seeds):
    with pytest.raises(UserFacingError):
        plan_split({"fixer_seeds": [101], "validation_seeds": [104], "test_seeds": [1, 2], **seeds}, tmp_path)


def test_scenes_of_different_seeds_share_no_image(tmp_path):
    from ns_diffusion_methods.methods.difix3d.learned_benchmark import image_digest

    plan = _plan(tmp_path)
    digests = {}
    for scene in [*plan.pair_sources, *plan.test]:
        digests[scene.seed] = {image_digest(p) for p in (scene.capture / "images").glob("*.png")}
    seeds = list(digests)
    for i, a in enumerate(seeds):
        for b in seeds[i + 1:]:
            assert digests[a].isdisjoint(digests[b]), (a, b)


def test_ns_train_reads_no_evaluation_image_of_a_test_scene(tmp_path):
    plan = _plan(tmp_path)
    for scene in plan.test:
        train = capture_images(scene.capture, "train")
        evaluation = capture_images(scene.capture, "test")
        assert len(train) == 3 and len(evaluation) == 2
        assert all("_train_" in p.name for p in train) and all("_eval_" in p.name for p in evaluation)
    assert check_no_leak(plan)["test_eval_images"] == 4

    # a capture whose training split lists an evaluation image is refused
    broken = plan.test[1].capture / "transforms.json"
    transforms = json.loads(broken.read_text())
    transforms["train_filenames"].append(transforms["val_filenames"][0])
    broken.write_text(json.dumps(transforms))
    with pytest.raises(DataError, match="in ns-train's training split"):
        check_no_leak(plan)


def test_fixer_pairs_hold_no_test_scene_image(tmp_path):
    plan = _plan(tmp_path)
    pairs = _pairs_like_the_benchmark(plan, tmp_path / "pairs")
    entries = sum(len(split) for split in json.loads(pairs.read_text()).values())
    assert entries == 3 * (3 + 2)  # every image of the two fixer scenes and the validation scene
    counts = check_no_leak(plan, [pairs, without_references(pairs)])
    assert counts["pair_images"] == len(pair_images(pairs)) + 2 * entries == 5 * entries
    assert counts["test_images"] == 2 * (3 + 2)

    # a test scene's evaluation image copied (re-encoded, renamed) into the pairs is caught by its pixels
    from ns_diffusion_methods.data.images import load_image, save_image

    data = json.loads(pairs.read_text())
    leaked = capture_images(plan.test[0].capture, "test")[1]
    save_image(load_image(leaked), pairs.parent / "innocent_name.png")
    name = next(iter(data["train"]))
    data["train"][name]["target_image"] = "innocent_name.png"
    pairs.write_text(json.dumps(data))
    with pytest.raises(DataError, match="image of a test scene"):
        check_no_leak(plan, [pairs])

    # so is a test scene's training image used as a reference of a validation pair
    data["train"][name]["target_image"] = f"{name}_clean.png"
    shutil.copy(capture_images(plan.test[1].capture, "train")[0], pairs.parent / "ref.png")
    next(iter(data["test"].values()))["ref_image"] = "ref.png"
    pairs.write_text(json.dumps(data))
    with pytest.raises(DataError, match="image of a test scene"):
        check_no_leak(plan, [pairs])


def test_summary_rows_pair_each_method_with_the_base_of_the_same_seed():
    rows = [{"kind": "test", "method": "base", "seed": 1, "psnr": 10.0, "ssim": 0.5, "wall_ratio": 1.0},
            {"kind": "test", "method": "base", "seed": 2, "psnr": 20.0, "ssim": 0.7, "wall_ratio": 1.0},
            {"kind": "test", "method": "difix", "seed": 1, "psnr": 11.0, "ssim": 0.6, "wall_ratio": 2.0},
            {"kind": "test", "method": "difix", "seed": 2, "psnr": 20.5, "ssim": 0.7, "wall_ratio": 3.0}]
    base, difix = summary_rows(rows, "base")
    assert base["psnr"] == 15.0 and base["psnr_std"] == pytest.approx(7.071, abs=1e-3) and "psnr_gain_db" not in base
    assert difix["psnr_gain_db"] == 0.75 and difix["psnr_gain_std"] == pytest.approx(0.35, abs=0.01)
    assert difix["wins"] == "2/2" and difix["wall_ratio"] == 2.5 and difix["seed"] == "mean ± std, n=2"
