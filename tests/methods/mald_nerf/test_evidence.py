"""The ``mald-nerf-evidence`` benchmark's pieces: the hallucinating oracle and the summary over seeds and repeats."""

import math

import pytest
import torch

from ns_diffusion_methods.methods.mald_nerf.benchmark import hallucinate, view_inconsistent, write_oracle
from ns_diffusion_methods.methods.mald_nerf.evidence import summarise
from ns_diffusion_methods.metrics import masked_psnr


def _inside(image: torch.Tensor) -> torch.Tensor:
    return image[8:16, 11:21]


def test_hallucinated_fills_differ_between_views_and_from_the_truth():
    background = torch.rand(24, 32, 3, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    # two views with the very same background: a consistent oracle without shift or jitter gives the truth twice
    assert torch.equal(view_inconsistent(background, generator, colour_shift=0.0, jitter_px=0), background)
    first = hallucinate(background, generator, colour_shift=0.0)
    second = hallucinate(background, generator, colour_shift=0.0)
    assert first.shape == background.shape
    # no view's fill is the truth, and the two views disagree (independent noise: mean |a - b| is 1/3)
    assert (_inside(first) - _inside(background)).abs().mean() > 0.2
    assert (_inside(second) - _inside(background)).abs().mean() > 0.2
    assert (_inside(first) - _inside(second)).abs().mean() > 0.2
    # the content is the scene's own, moved: every fill pixel is a background pixel (no colour shift asked)
    values = {tuple(v) for v in background.reshape(-1, 3).tolist()}
    assert all(tuple(v) in values for v in first.reshape(-1, 3).tolist())
    # deterministic from the generator's seed
    again = torch.Generator().manual_seed(0)
    view_inconsistent(background, again, colour_shift=0.0, jitter_px=0)
    assert torch.equal(hallucinate(background, again, colour_shift=0.0), first)


def test_hallucinating_oracle_is_far_from_the_truth_where_the_consistent_one_is_close(object_removal_capture,
                                                                                      tmp_path):
    consistent = write_oracle(object_removal_capture, tmp_path / "c.pt", seed=0, colour_shift=0.12, jitter_px=2)
    wrong = write_oracle(object_removal_capture, tmp_path / "h.pt", seed=0, colour_shift=0.12, jitter_px=2,
                         kind="hallucinating")
    assert wrong["masked_psnr"] < consistent["masked_psnr"] - 3.0
    fills = torch.load(tmp_path / "h.pt")
    near = torch.load(tmp_path / "c.pt")
    assert torch.equal(fills["captured"], near["captured"])  # the captured images are the same; only fills differ
    # per view, the hallucinated fill is far from the (nearly true) consistent one
    per_view = masked_psnr(fills["fills"].permute(0, 3, 1, 2).float() / 255, near["fills"].permute(0, 3, 1, 2).float()
                           / 255, torch.ones(len(fills["fills"]), 1, *fills["fills"].shape[1:3], dtype=torch.bool),
                           reduction="none")
    assert bool((per_view < 25).all())
    with pytest.raises(ValueError, match="consistent' or 'hallucinating"):
        write_oracle(object_removal_capture, tmp_path / "x.pt", seed=0, colour_shift=0.1, jitter_px=1, kind="other")


def test_summary_is_the_mean_and_spread_over_seeds_of_the_per_seed_means():
    def row(seed, repeat, value, method="mald-nerf"):
        return {"method": method, "oracle": "hallucinating", "capture": "seen", "seed": seed, "repeat": repeat,
                "masked_psnr": value, "psnr": 20.0, "status": "ok"}

    rows = [row(0, 0, 10.0), row(0, 1, 12.0), row(1, 0, 14.0), row(1, 1, 14.0),
            row(0, 0, 99.0, "L1 inside") | {"status": "failed: boom"}]
    (summary,) = summarise(rows)  # the failed run is left out of the summary
    assert summary["method"] == "mald-nerf" and summary["n_seeds"] == 2 and summary["n_runs"] == 4
    assert summary["masked_psnr"] == pytest.approx(12.5)  # mean of the seeds' means 11 and 14
    assert summary["masked_psnr_std"] == pytest.approx(math.sqrt(((11 - 12.5) ** 2 + (14 - 12.5) ** 2) / 1))
    # between repeats: seed 0's sample std sqrt(2), seed 1's 0
    assert summary["masked_psnr_std_repeats"] == pytest.approx(math.sqrt(2) / 2)
    assert summary["psnr_std"] == pytest.approx(0.0)


@pytest.mark.slow
def test_the_stock_nerfacto_row_trains_offline(object_removal_capture, tmp_path):
    """Stock nerfacto builds an LPIPS metric whose weights cannot be downloaded here: the benchmark's nerfacto row
    must train (LPIPS unavailable), not fail."""
    from ns_diffusion_methods.methods.mald_nerf.benchmark import _train_nerfacto

    config = _train_nerfacto(object_removal_capture, tmp_path / "nerfacto", iterations=1)
    assert config.is_file()
