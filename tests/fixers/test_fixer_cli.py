"""``ns-diffusion fix`` / ``train-fixer`` / ``fixer-pairs`` through the dispatcher."""

from __future__ import annotations

import pytest
import torch

from ns_diffusion_methods.cli.main import main
from ns_diffusion_methods.data.images import load_image, save_image
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.fixers.commands import match_references


def _write(folder, names, size=(20, 28), seed=0):
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        save_image(torch.rand(3, *size, generator=generator), folder / name)
    return folder


def test_fix_writes_one_image_per_input_with_its_name_and_size(tmp_path):
    inputs = _write(tmp_path / "renders", ["b.png", "a.jpg", "c.png"])
    _write(inputs, ["d.png"], size=(33, 17))
    references = _write(tmp_path / "refs", ["a.png", "b.png", "c.png", "d.png"], size=(24, 24), seed=1)
    out = tmp_path / "fixed"
    assert main(["fix", "--input", str(inputs), "--reference", str(references), "--output", str(out),
                 "--model", "tiny", "--chunk-size", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png", "c.png", "d.png"]
    for name in ("a.jpg", "b.png", "c.png", "d.png"):
        assert load_image(out / name).shape == load_image(inputs / name).shape
    # a single input file and no reference
    assert main(["fix", "--input", str(inputs / "d.png"), "--output", str(tmp_path / "one"), "--model", "tiny",
                 "--dtype", "float32"]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["d.png"]
    with pytest.raises(DataError, match="overwrite"):
        main(["fix", "--input", str(inputs), "--output", str(inputs), "--model", "tiny"])


def test_references_are_matched_by_name_then_by_order(tmp_path):
    inputs = [tmp_path / "in" / n for n in ("x.png", "y.png")]
    by_name = _write(tmp_path / "by_name", ["y.jpg", "x.jpg", "z.jpg"])
    assert [p.name for p in match_references(inputs, by_name)] == ["x.jpg", "y.jpg"]
    by_order = _write(tmp_path / "by_order", ["1.png", "2.png"])
    assert [p.name for p in match_references(inputs, by_order)] == ["1.png", "2.png"]
    assert [p.name for p in match_references(inputs, by_order / "2.png")] == ["2.png", "2.png"]
    with pytest.raises(DataError, match="Cannot pair"):
        match_references(inputs, _write(tmp_path / "three", ["1.png", "2.png", "3.png"]))
    assert match_references(inputs, None) == [None, None]


@pytest.mark.parametrize("command", ["fix", "train-fixer", "fixer-pairs"])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--" in capsys.readouterr().out


def test_train_fixer_command_runs(tmp_path, synthetic_pairs):
    data = synthetic_pairs(tmp_path / "pairs", 2, test_count=1)
    assert main(["train-fixer", "--data", str(data), "--output", str(tmp_path / "run"), "--model", "tiny",
                 "--num-steps", "2", "--lpips-loss-mult", "0", "--gram-loss-mult", "0", "--resolution", "32", "32",
                 "--device", "cpu"]) == 0
    assert (tmp_path / "run" / "model" / "model_index.json").is_file()
