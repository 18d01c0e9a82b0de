"""``ns-diffusion masks-viewer``: the "Object masks" panel in nerfstudio's viewer, driven in headless Chromium.

A tiny nerfacto run of the object-removal capture is opened with the panel; the page types a box and the clean-up
settings into the panel, the scene's box and gizmo follow, the panel's command line shows them, and "Write masks"
writes a capture copy with a mask per frame. The command line the panel shows, run as ``ns-diffusion masks``, writes
the very same masks, and the panel's coverage of every view is that of those masks.

The capture is the object-removal capture's training frames as ns-process-data writes a capture (no masks, no
evaluation views marked), so frames whose mask is empty become evaluation views. The run is trained for one step: its
depth is arbitrary but fixed, which is all the comparison needs. The box is put around the surface point the run
renders at the centre of its first view, so that view has object pixels.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import harness
import numpy as np
import pytest
from viewer_browser import (
    GUI_UPDATE,
    MARKDOWN,
    MESH,
    NUMBER,
    SET_POSITION,
    TEXT,
    TRANSFORM_CONTROLS,
    VECTOR3,
    ViewerPage,
    console_script,
    free_port,
    serving,
)

#: end-to-end runs (ns-train, a viewer process, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow


def markdown(page: ViewerPage, starts: str) -> Optional[str]:
    """The current text of the markdown element whose text starts with ``starts`` (None: none does yet)."""
    texts = {m["id"]: m["markdown"] for m in page.got(MARKDOWN)}
    for update in page.got(GUI_UPDATE):
        if update["id"] in texts and "markdown" in update["updates"]:
            texts[update["id"]] = update["updates"]["markdown"]
    return next((text for text in texts.values() if text.startswith(starts)), None)


def fill(page: ViewerPage, element: Dict[str, Any], values: List[str]) -> None:
    """Type ``values`` into the inputs of a GUI element (one for a number or text, three for a vector), as a user."""
    row = page.page.locator(f"label[for='{element['id']}']").locator(  # the element's row: label and inputs
        "xpath=ancestor::div[contains(@class, 'mantine-Flex-root')][1]")
    inputs = row.locator("input")
    assert inputs.count() == len(values), (element["label"], inputs.count())
    for index, value in enumerate(values):
        inputs.nth(index).fill(value)
        inputs.nth(index).press("Tab")


def centre_surface_box(config: Path, size: float) -> List[float]:
    """A box of side ``size`` (2-decimal numbers, as the panel's inputs hold them) around the point the run renders
    at the centre of its first view."""
    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.compat import package_run
    from ns_diffusion_methods.data.box_masks import run_views
    from ns_diffusion_methods.dataset_updates.render import render_camera_outputs

    with package_run():  # nerfacto's LPIPS without its weights, as the package's commands build it
        run_config, pipeline, _, _ = eval_setup(config, test_mode="inference")
    _, camera = run_views(run_config)[0]
    outputs = render_camera_outputs(pipeline.model, camera, ("depth",))
    rays = camera.generate_rays(camera_indices=0, keep_shape=True)
    row, col = int(camera.height) // 2, int(camera.width) // 2
    point = rays.origins[row, col] + rays.directions[row, col] * outputs["depth"][row, col, 0]
    return [round(float(v), 2) for v in point] + [size] * 3 + [0.0, 0.0, 0.0]


def processed_capture(capture: Path, folder: Path) -> Path:
    """The training frames of ``capture`` as ns-process-data writes them: images and poses, no masks or splits."""
    meta = json.loads((capture / "transforms.json").read_text())
    frames = [{k: v for k, v in f.items() if k != "object_mask_path"} for f in meta["frames"]
              if "train" in f["file_path"]]
    folder.mkdir(parents=True)
    for frame in frames:
        (folder / frame["file_path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(capture / frame["file_path"], folder / frame["file_path"])
    split_lists = ("train_filenames", "val_filenames", "test_filenames")
    kept = {k: v for k, v in meta.items() if k != "frames" and k not in split_lists}
    (folder / "transforms.json").write_text(json.dumps({**kept, "frames": frames}))
    return folder


def test_the_panel_writes_the_masks_of_the_box_set_in_the_browser(browser: Any, object_removal_capture: Path,
                                                                    tmp_path: Path):
    from ns_diffusion_methods.cli.main import main
    from ns_diffusion_methods.data.masks import read_object_mask

    capture = processed_capture(object_removal_capture, tmp_path / "capture")
    config = harness.train("nerfacto", capture, tmp_path / "run", harness.SMALL_NERFACTO_FLAGS, max_num_iterations=1)
    box = centre_surface_box(config, 0.3)
    gui_output = tmp_path / "masked-in-viewer"
    port = free_port()
    command = [console_script("ns-diffusion"), "masks-viewer", "--load-config", str(config),
               "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port)]
    with serving(command, port, tmp_path / "masks-viewer.log"):
        with ViewerPage(browser, f"http://127.0.0.1:{port}/", tmp_path / "failed-masks-panel.png") as page:
            centre = page.wait_for(lambda: [m for m in page.got(VECTOR3) if m["label"] == "Box center"],
                                   "the Object masks panel")[-1]
            # the panel's box, settings and output folder, typed in as a user does
            fill(page, centre, [str(v) for v in box[:3]])
            fill(page, page.gui(VECTOR3, "Box size"), [str(v) for v in box[3:6]])
            fill(page, page.gui(VECTOR3, "Box rotation"), [str(v) for v in box[6:]])
            fill(page, page.gui(NUMBER, "Min accumulation"), ["0"])
            fill(page, page.gui(NUMBER, "Dilate kernel"), ["3"])
            fill(page, page.gui(NUMBER, "Dilate times"), ["1"])
            fill(page, page.gui(NUMBER, "Shadow darkening"), ["0"])
            fill(page, page.gui(TEXT, "Output folder"), [str(gui_output)])
            # the server has them all once the command line it shows has them
            box_text = ",".join(re.sub(r"\.0$", "", repr(v)) for v in box)

            def shown_command() -> Optional[str]:
                text = markdown(page, "Same masks from a shell") or ""
                wanted = [f"--box={box_text}", f"--output {gui_output}", "--min-accumulation 0", "--dilate 3 1",
                          "--shadow-darkening 0"]
                return text if all(w in text for w in wanted) else None

            text = page.wait_for(shown_command, "the command line of the typed box", timeout=30)
            # the box is drawn at the typed place and size (the viewer's scene is 10 times the world)
            gizmo = [m for m in page.got(SET_POSITION) if m["name"] == "/object_masks"][-1]
            assert page.got(TRANSFORM_CONTROLS) and np.allclose(gizmo["position"], np.asarray(box[:3]) * 10,
                                                                atol=1e-4)
            mesh = [m for m in page.got(MESH) if m["name"] == "/object_masks/box"][-1]
            vertices = np.frombuffer(mesh["vertices"], dtype=np.float32).reshape(-1, 3) \
                if isinstance(mesh["vertices"], (bytes, bytearray)) else np.asarray(mesh["vertices"])
            assert np.allclose(vertices.max(0) - vertices.min(0), np.asarray(box[3:6]) * 10, atol=1e-4)

            start = time.monotonic()
            page.page.get_by_role("button", name="Write masks").click()

            def finished() -> Optional[str]:
                """The panel's status (the markdown that showed the progress) once it no longer shows progress."""
                updates = [(u["id"], u["updates"]["markdown"]) for u in page.got(GUI_UPDATE, since=start)
                           if "markdown" in u["updates"]]
                status = {i for i, text in updates if text.startswith("Rendering the depth of every frame")}
                texts = [text for i, text in updates if i in status]
                return texts[-1] if texts and not texts[-1].startswith("Rendering") else None

            status = page.wait_for(finished, "the panel's report of the written masks", timeout=180)
            assert status.startswith("**Wrote**"), status
    # the panel wrote the capture copy, a mask for every training frame
    written = json.loads((gui_output / "transforms.json").read_text())
    masked = [f for f in written["frames"] if "object_mask_path" in f]
    assert masked and all((gui_output / f["object_mask_path"]).is_file() for f in masked)
    assert any(read_object_mask(gui_output / f["object_mask_path"]).any() for f in masked)  # the box's view
    # the command line the panel showed writes the same masks
    words = shlex.split(text.split("```")[1].replace("\\\n", " "))
    assert words[:2] == ["ns-diffusion", "masks"]
    cli_output = tmp_path / "masked-by-command"
    words[words.index("--output") + 1] = str(cli_output)
    assert main(words[1:]) == 0
    by_command = {f["file_path"]: f for f in json.loads((cli_output / "transforms.json").read_text())["frames"]}
    assert sorted(by_command) == sorted(f["file_path"] for f in written["frames"])
    for frame in written["frames"]:
        other = by_command[frame["file_path"]]
        assert ("object_mask_path" in frame) == ("object_mask_path" in other), frame["file_path"]
        name = Path(frame["file_path"]).name
        if "object_mask_path" in frame:
            mask = read_object_mask(gui_output / frame["object_mask_path"])
            assert np.array_equal(mask, read_object_mask(cli_output / other["object_mask_path"])), frame["file_path"]
            cell = f"| {name} | {mask.mean():.1%}{'' if mask.any() else ' (evaluation view)'} |"
        else:
            cell = f"| {name} | 0.0% (evaluation view) |"
        assert cell in status, cell  # the panel's coverage of this view
