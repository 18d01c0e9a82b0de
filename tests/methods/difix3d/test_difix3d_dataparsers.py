"""difix3d-nerfacto and difix3d-splat on captures in the layouts users bring, through nerfstudio's own dataparsers
(the dataparser subcommand after the flags, as for stock nerfacto/splatfacto): a COLMAP binary model (``colmap``), the
Blender layout (``blender-data``), and ``ns-process-data`` output that ships only ``images_2/`` (``nerfstudio-data
--downscale-factor 2``, which also checks that render-time references are the images the run trained on)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import harness
import numpy as np
import pytest
from methods.difix3d.test_difix3d_methods import FAST, METHODS, TINY_FIXER, checkpoint_state, pseudo_views_of
from PIL import Image
from user_captures import write_blender_capture, write_colmap_capture, write_processed_capture

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow

#: a round at step 1 (so the run fixes, renders and references are used), two training steps
ROUND_AT_ONCE = ["--pipeline.max-targets", "1", "--pipeline.fix-start-step", "1",
                 "--pipeline.steps-per-fix", "100", "--pipeline.fix-batch-size", "1", *TINY_FIXER]
ITERATIONS = 2

#: layout -> (writer of the capture from the sparse-views capture, dataparser subcommand and its flags)
LAYOUTS: Dict[str, Tuple[Callable[[Path, Path], Path], List[str]]] = {
    "colmap": (write_colmap_capture, ["colmap", "--colmap-path", "sparse/0", "--eval-mode", "filename"]),
    "blender": (write_blender_capture, ["blender-data"]),
    "images-2-only": (lambda source, output: write_processed_capture(source, output, full_size=False,
                                                                      downscales=(2,)),
                      ["nerfstudio-data", "--downscale-factor", "2", "--eval-mode", "interval", "--eval-interval",
                       "3"]),
}


@pytest.fixture(scope="module")
def captures(sparse_views_capture, tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {name: writer(sparse_views_capture, root / name) for name, (writer, _) in LAYOUTS.items()}


@pytest.fixture(scope="module")
def trained(captures, tmp_path_factory) -> Callable[[str, str], Path]:
    """``trained(method, layout)``: config.yml of a 2-step run with a pseudo-view round at step 1 (run once)."""
    runs: Dict[Tuple[str, str], Path] = {}

    def train(method: str, layout: str) -> Path:
        if (method, layout) not in runs:
            runs[method, layout] = harness.train(method, captures[layout],
                                                 tmp_path_factory.mktemp(f"{method}-{layout}"),
                                                 [*FAST[method], *ROUND_AT_ONCE], LAYOUTS[layout][1],
                                                 max_num_iterations=ITERATIONS)
        return runs[method, layout]

    return train


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("method", METHODS)
def test_trains_with_pseudo_views_and_evaluates(trained, method, layout):
    config = trained(method, layout)
    parser = {"colmap": "ColmapDataParserConfig", "blender": "BlenderDataParserConfig",
              "images-2-only": "NerfstudioDataParserConfig"}[layout]
    assert f"{parser}\n" in config.read_text()  # the dataparser the user named
    state = checkpoint_state(config)
    assert state["step"] == ITERATIONS - 1
    views = pseudo_views_of(state)
    assert int(views.rounds) == 1 and bool(views.filled.all())  # fixed, with references from this capture
    metrics = harness.evaluate(config)["results"]
    for key in ("psnr", "ssim", "psnr_fixed", "ssim_fixed"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN


def test_splat_seeds_its_gaussians_from_the_colmap_points(trained, captures):
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig

    config = trained("difix3d-splat-small", "colmap")
    points = ColmapDataParserConfig(data=captures["colmap"], colmap_path=Path("sparse/0")).setup() \
        .get_dataparser_outputs("train").metadata["points3D_xyz"]
    means = checkpoint_state(config)["pipeline"]["_model.gauss_params.means"]
    assert means.shape[0] == points.shape[0] != 500  # the COLMAP points (no densification yet), not --num-random


@pytest.mark.parametrize("method", METHODS)
def test_render_time_references_are_the_trained_images(trained, captures, method, tmp_path):
    """A capture with only images_2/: ns-render (inference mode, where nerfstudio names full-size files) fixes frames
    with references read from images_2/, at the resolution the run trained on."""
    from nerfstudio.utils.eval_utils import eval_setup

    config = trained(method, "images-2-only")
    folder = captures["images-2-only"] / "images_2"
    trained_size = Image.open(folder / "frame_00001.png").size  # (W, H)
    frames = harness.render_dataset(config, tmp_path / "renders", split="test", outputs=("rgb_fixed",))
    assert frames and all(Image.open(f).size == trained_size for f in frames)

    _config, pipeline, _checkpoint, _step = eval_setup(config, test_mode="inference")
    reference = pipeline.references.image(0)  # training image 0: frame 2 (every 3rd frame from the 1st is eval)
    expected = np.asarray(Image.open(folder / "frame_00002.png").convert("RGB")) / 255.0
    assert tuple(reference.shape) == (trained_size[1], trained_size[0], 3)
    assert float(np.abs(reference.numpy() - expected).max()) < 1e-6


#: ``ns-train ARGS --help`` for each ARGS, in one fresh interpreter that imports nerfstudio as the console script does
HELP_SCRIPT = """
import sys
from nerfstudio.scripts.train import entrypoint
for args in ([], ["difix3d-nerfacto"], ["difix3d-splat"]):
    sys.argv = ["ns-train", *args, "--help"]
    print(f"=== ns-train {' '.join(args)}", flush=True)
    try:
        entrypoint()
    except SystemExit as exit:
        assert exit.code in (0, None), exit.code
"""


def test_ns_train_help_lists_the_dataparser_subcommands():
    """In a fresh process, as a user runs it (nerfstudio discovers this plugin while its own modules import)."""
    from nerfstudio.configs.dataparser_configs import all_dataparsers

    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    _, overview, nerfacto, splat = result.stdout.split("=== ns-train")
    assert "difix3d-nerfacto" in overview and "difix3d-splat-small" in overview
    for text in (nerfacto, splat):
        listed = set(re.findall(r"• ([\w.:-]+)", text))
        dataparsers = {name for name in listed if ":" not in name}
        assert {"nerfstudio-data", "colmap", "blender-data"} <= dataparsers
        assert dataparsers == set(all_dataparsers)  # the subcommands `ns-train nerfacto --help` lists
        # and the fixer backends
        assert listed - dataparsers == {"pipeline.fixer:difix", "pipeline.fixer:identity", "pipeline.fixer:oracle"}


def test_the_splat_preset_loads_3d_points_with_or_without_naming_its_dataparser():
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig

    from ns_diffusion_methods.methods.difix3d.config import difix3d_splat_config

    def parser(*args: str):
        return tyro.cli(AnnotatedBaseConfigUnion, args=list(args)).pipeline.datamanager.dataparser

    assert difix3d_splat_config().pipeline.datamanager.dataparser.load_3D_points  # no subcommand: the preset's own
    assert parser("difix3d-splat", "nerfstudio-data").load_3D_points  # named: still the preset's default
    assert not parser("difix3d-nerfacto", "nerfstudio-data").load_3D_points  # nerfacto keeps nerfstudio's default
    colmap = parser("difix3d-splat-small", "colmap", "--colmap-path", "sparse/1")
    assert type(colmap) is ColmapDataParserConfig and colmap.load_3D_points and colmap.colmap_path == Path("sparse/1")


def test_a_corrupt_downscaled_image_is_named_before_training(captures, tmp_path):
    """The up-front check reads the files a --downscale-factor run loads (images_2/), not the absent full-size ones."""
    import shutil

    from ns_diffusion_methods.errors import DataError

    capture = tmp_path / "capture"
    shutil.copytree(captures["images-2-only"], capture)
    corrupt = capture / "images_2" / "frame_00004.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])  # cut short
    with pytest.raises(DataError, match="cannot be read as an image") as info:
        harness.train("difix3d-nerfacto-small", capture, tmp_path / "outputs", TINY_FIXER,
                      LAYOUTS["images-2-only"][1], max_num_iterations=1)
    message = str(info.value)
    assert str(corrupt) in message and "1 of 20 images" in message  # only that one: images_2/ is what is checked
