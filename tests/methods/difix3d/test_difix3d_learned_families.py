"""``difix3d-learned`` on several backbones (``families``): what each run is given, how rows are scored, and that the
split checks guard every family.

Fast: tiny captures (16 px); ``ns-train``/``ns-eval`` are replaced by a recorder (nothing is trained).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from ns_diffusion_methods.benchmark.runner import find_definition, load_definition
from ns_diffusion_methods.errors import DataError, UserFacingError
from ns_diffusion_methods.methods.difix3d import benchmark as sparse_views
from ns_diffusion_methods.methods.difix3d.learned_benchmark import (
    IDENTITY_FLAGS,
    capture_images,
    run,
    select_families,
    summary_rows,
)

TINY_CAPTURE = {"image_size": 16, "num_views": 3, "num_eval_views": 2}


def _spec(tmp_path: Path, pairs: Path, **params):
    spec = load_definition(find_definition("difix3d-learned"))
    model = tmp_path / "fixer-model"
    model.mkdir(exist_ok=True)
    spec["params"].update(capture=TINY_CAPTURE, fixer_capture={}, fixer_seeds=[101], validation_seeds=[],
                          test_seeds=[21, 22], trained_fixer={"model": str(model), "pairs": str(pairs)}, **params)
    return spec


def _pairs(folder: Path, image: Path) -> Path:
    """A one-pair file whose images are copies of ``image``."""
    from ns_diffusion_methods.data.images import load_image, save_image

    folder.mkdir(parents=True, exist_ok=True)
    save_image(load_image(image), folder / "a.png")
    (folder / "data.json").write_text(json.dumps({"train": {"p": {"image": "a.png", "target_image": "a.png",
                                                                   "ref_image": "a.png"}}, "test": {}}))
    return folder / "data.json"


class Recorder:
    """Stands in for ``ns-train`` + ``ns-eval``: records each run, writes a checkpoint, returns a PSNR per run."""

    def __init__(self, psnr):
        self.calls = []
        self.psnr = psnr

    def __call__(self, method, capture, folder, entry, iterations, fixer, load_dir=None, extra=()):
        config = Path(folder) / "config.yml"
        (config.parent / "nerfstudio_models").mkdir(parents=True)
        (config.parent / "nerfstudio_models" / "step-000000099.ckpt").write_bytes(b"")
        call = {"method": method, "folder": Path(folder), "flags": list(entry.get("flags", [])),
                "iterations": iterations, "fixer": list(fixer), "load_dir": load_dir, "extra": list(extra)}
        self.calls.append(call)
        psnr = self.psnr(call)
        results = {"psnr": psnr, "ssim": 0.5}
        if method.startswith("difix3d") and "--pipeline.fix-start-step" in extra:
            results.update(psnr_fixed=psnr + 0.25, ssim_fixed=0.5)
        return {"config": config, "seconds": 2.0 if "--pipeline.fix-start-step" in extra else 1.0,
                "results": results}


def test_shipped_definition_runs_both_families():
    params = load_definition(find_definition("difix3d-learned"))["params"]
    nerfacto, splat = select_families(params)
    assert [f.name for f in select_families({**params, "families": ["splat"]})] == ["splat"]
    del params["families"]
    assert [f.name for f in select_families(params)] == ["nerfacto"]  # without the key: nerfacto alone
    assert (nerfacto.base_label, nerfacto.difix_label) == ("nerfacto", "difix3d-nerfacto")
    assert (splat.base_label, splat.difix_label) == ("splatfacto", "difix3d-splat")
    # the splat base is the same preset as its difix3d run, with rounds that never come
    assert splat.base["method"] == splat.difix["method"] == "difix3d-splat-small"
    assert splat.base["flags"][:2] == ["--pipeline.fix-start-step", "1000000000"]


@pytest.mark.parametrize("families", [["splat", "splat"], ["gaussians"], []])
def test_unknown_repeated_or_no_families_are_refused(families):
    params = load_definition(find_definition("difix3d-learned"))["params"]
    with pytest.raises(UserFacingError, match="famil"):
        select_families({**params, "families": families})


def test_summary_pairs_each_method_with_the_base_of_its_own_family():
    rows = [{"kind": "test", "family": "a", "method": "base-a", "seed": 1, "psnr": 10.0},
            {"kind": "test", "family": "a", "method": "fix", "seed": 1, "psnr": 11.0},
            {"kind": "test", "family": "b", "method": "base-b", "seed": 1, "psnr": 20.0},
            {"kind": "test", "family": "b", "method": "fix", "seed": 1, "psnr": 20.5},
            {"kind": "test", "family": "b", "method": "base-b", "seed": 2, "psnr": 30.0},
            {"kind": "test", "family": "b", "method": "fix", "seed": 2, "psnr": 29.5}]
    summary = {(r["family"], r["method"]): r for r in summary_rows(rows, {"a": "base-a", "b": "base-b"})}
    assert set(summary) == {("a", "base-a"), ("a", "fix"), ("b", "base-b"), ("b", "fix")}
    assert summary[("a", "fix")]["psnr_gain_db"] == 1.0 and summary[("a", "fix")]["wins"] == "1/1"
    assert summary[("b", "fix")]["psnr_gain_db"] == 0.0 and summary[("b", "fix")]["wins"] == "1/2"
    assert summary[("b", "fix")]["psnr_gain_std"] == 0.71  # stdev(+0.5, -0.5), rounded
    assert "psnr_gain_db" not in summary[("b", "base-b")]


def test_each_family_runs_the_same_protocol_with_the_learned_fixer(tmp_path, monkeypatch):
    # a pairs file from a scene that is not scored (seed 101) passes the leak check
    from ns_diffusion_methods.synthetic import write_sparse_views

    other = write_sparse_views(tmp_path / "other", seed=101, **TINY_CAPTURE)
    pairs = _pairs(tmp_path / "pairs", capture_images(other, "train")[0])
    recorder = Recorder(lambda call: 15.0 + (1.0 if "pipeline.fixer:difix" in call["fixer"] else 0.0))
    monkeypatch.setattr(sparse_views, "_train", recorder)
    variants = [{"label": "20 rounds", "flags": ["--pipeline.steps-per-fix", "5"]},
                {"label": "20 rounds", "fixer": "identity", "flags": ["--pipeline.steps-per-fix", "5"]}]
    spec = _spec(tmp_path, pairs, families=["nerfacto", "splat"], ablations=["identity"], variants=variants,
                 base_iterations=30, fix_iterations=20, steps_per_fix=10)
    rows = run(spec, tmp_path / "out", Console(quiet=True))

    for seed in (21, 22):
        for family, base_method, difix_method in (("nerfacto", "nerfacto", "difix3d-nerfacto-small"),
                                                  ("splat", "difix3d-splat-small", "difix3d-splat-small")):
            calls = [c for c in recorder.calls if c["folder"].parent == tmp_path / "out" / "runs" / f"test-{seed}"
                     / family]
            base, continued, *fixing = calls
            assert base["method"] == continued["method"] == base_method and base["load_dir"] is None
            assert base["iterations"] == 30 and continued["iterations"] == 20
            assert continued["load_dir"] == base["folder"] / "nerfstudio_models" and continued["extra"] == []
            # a base with a fixer slot (the splat preset) gets the identity fixer it never calls; nerfacto none
            assert base["fixer"] == continued["fixer"] == (IDENTITY_FLAGS if family == "splat" else [])
            assert [c["method"] for c in fixing] == [difix_method] * 4
            assert all(c["load_dir"] == continued["load_dir"] and c["iterations"] == 20 for c in fixing)
            assert [c["fixer"][0] for c in fixing] == ["pipeline.fixer:difix", "pipeline.fixer:identity",
                                                       "pipeline.fixer:difix", "pipeline.fixer:identity"]
            assert all(c["fixer"][2] == spec["params"]["trained_fixer"]["model"] for c in fixing if len(c["fixer"]) > 1)
            for call, rounds in zip(fixing, ["10", "10", "5", "5"]):
                extra = call["extra"]
                assert extra[:2] == ["--pipeline.fix-start-step", "30"]
                # the last --pipeline.steps-per-fix wins: the variants' 5 after the definition's 10
                last = max(i for i, flag in enumerate(extra) if flag == "--pipeline.steps-per-fix")
                assert extra[last + 1] == rounds

    tests = [r for r in rows if r["kind"] == "test"]
    assert {r["family"] for r in tests} == {"nerfacto", "splat"}
    labels = {r["method"] for r in tests if r["family"] == "splat"}
    assert labels == {"splatfacto", "difix3d-splat", "difix3d-splat + rgb_fixed (Difix3D+)",
                      "difix3d-splat (identity fixer)", "difix3d-splat (20 rounds)",
                      "difix3d-splat (20 rounds) + rgb_fixed (Difix3D+)", "difix3d-splat (20 rounds, identity fixer)"}
    summary = {(r["family"], r["method"]): r for r in rows if r["kind"] == "summary"}
    assert summary[("splat", "difix3d-splat")]["psnr_gain_db"] == 1.0
    assert summary[("splat", "difix3d-splat (20 rounds, identity fixer)")]["psnr_gain_db"] == 0.0
    assert summary[("nerfacto", "difix3d-nerfacto + rgb_fixed (Difix3D+)")]["psnr_gain_db"] == 1.25
    assert summary[("nerfacto", "difix3d-nerfacto")]["wall_ratio"] == 2.0
    assert all({"method", "seed", "psnr", "ssim", "family"} <= set(r) for r in tests)


@pytest.mark.parametrize("families", [["splat"], ["nerfacto", "splat"]])
def test_a_leaking_fixer_is_refused_before_any_family_trains(tmp_path, monkeypatch, families):
    from ns_diffusion_methods.synthetic import write_sparse_views

    # seed 22's capture is written exactly as the benchmark will write it: its evaluation image in the pairs leaks
    scored = write_sparse_views(tmp_path / "scored", seed=22, **TINY_CAPTURE)
    pairs = _pairs(tmp_path / "pairs", capture_images(scored, "test")[1])
    recorder = Recorder(lambda call: 15.0)
    monkeypatch.setattr(sparse_views, "_train", recorder)
    with pytest.raises(DataError, match="image of a test scene"):
        run(_spec(tmp_path, pairs, families=families), tmp_path / "out", Console(quiet=True))
    assert recorder.calls == []


def test_a_missing_trained_fixer_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(sparse_views, "_train", Recorder(lambda call: 15.0))
    spec = _spec(tmp_path, tmp_path / "nowhere" / "data.json", families=["splat"])
    with pytest.raises(UserFacingError, match="nowhere"):
        run(spec, tmp_path / "out", Console(quiet=True))
