"""``ns-diffusion masks-viewer``: place the box of ``ns-diffusion masks`` around the object in nerfstudio's viewer and
write the masks from there.

The run opens in nerfstudio's own viewer, as ``ns-viewer`` opens it (:func:`open_viewer`); the "Object masks" panel
is added below the viewer's tabs (nerfstudio hands the viewer to every ``ViewerControl`` it finds on the pipeline).
The panel (:class:`MasksPanel`) holds:

- the box: centre, size and rotation (roll, pitch, yaw in radians) in the viewer's coordinates, the numbers
  ``--box`` takes; the box is drawn in the scene (translucent, with its edges) on a gizmo that moves and turns it,
  and "Use the crop box" copies the box of the viewer's Crop Viewport (Crop center, Crop scale and Crop rotation are
  the same numbers);
- the rules and clean-up settings of the command (``--min-accumulation``, ``--floor-margin``,
  ``--shadow-darkening``, ``--supersample``, ``--min-component``, ``--dilate``) and the folder the capture with the
  masks is written to;
- the equivalent ``ns-diffusion masks`` command line, updated with every change;
- "Write masks": the command's own code path (:func:`~ns_diffusion_methods.data.box_masks.masks_from_views`, the
  frames of :func:`~ns_diffusion_methods.data.box_masks.run_views`) on the loaded run, holding the viewer's render
  lock; then the coverage of every view, or why nothing was written.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from pathlib import Path
from typing import Any, Callable, ContextManager, List, Optional, Sequence, Tuple

import numpy as np

from ns_diffusion_methods.data.box_masks import Box, BoxMaskSettings, DerivedMasks
from ns_diffusion_methods.errors import UserFacingError

#: (box, settings, output folder, called after each view) -> (add-masks' report, derived masks)
WriteMasks = Callable[[Box, BoxMaskSettings, Path, Callable[[], None]], Tuple[Any, DerivedMasks]]

#: scene node of the panel's drawing (the gizmo; the box is its child)
NODE = "/object_masks"

#: the panel's folder label
FOLDER = "Object masks"

#: the box's colour in the scene
BOX_COLOR = (255, 140, 40)

#: the 8 corners (unit cube centred at the origin) and 12 outward triangles of a box
_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=np.float32)
_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                   [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], dtype=np.uint32)


def _number(value: float) -> str:
    """The shortest text that reads back as ``value`` (so the command line gives the very same box)."""
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(float(value))


def box_argument(box: Box) -> str:
    """``CX,CY,CZ,SX,SY,SZ,RX,RY,RZ`` of ``box``, as ``--box`` reads it (:meth:`Box.parse`)."""
    return ",".join(_number(v) for v in (*box.center, *box.size, *box.rotation))


def command_line(load_config: Path, box: Box, settings: BoxMaskSettings, output: Optional[Path],
                 multiline: bool = False) -> str:
    """The ``ns-diffusion masks`` command that writes what the panel's "Write masks" writes (``DIR`` where no output
    folder is set; ``multiline``: one flag per line, continued with backslashes)."""
    defaults = BoxMaskSettings()
    groups = [["ns-diffusion", "masks", "--load-config", str(load_config)], [f"--box={box_argument(box)}"],
              ["--output", str(output) if output is not None else "DIR"]]
    if settings.min_accumulation != defaults.min_accumulation:
        groups.append(["--min-accumulation", _number(settings.min_accumulation)])
    if settings.floor_margin != defaults.floor_margin:
        groups.append(["--floor-margin", _number(settings.floor_margin)])
    if settings.shadow_darkening != defaults.shadow_darkening:
        groups.append(["--shadow-darkening", _number(settings.shadow_darkening)])
    if settings.supersample != defaults.supersample:
        groups.append(["--supersample", str(int(settings.supersample))])
    if settings.min_component != defaults.min_component:
        groups.append(["--min-component", _number(settings.min_component)])
    if tuple(settings.dilation) != tuple(defaults.dilation):
        groups.append(["--dilate", str(settings.dilation[0]), str(settings.dilation[1])])
    words = [" ".join(w if w == "DIR" else shlex.quote(w) for w in group) for group in groups]
    return (" \\\n    " if multiline else " ").join(words)


def coverage_report(report: Any, derived: DerivedMasks) -> str:
    """Markdown: what was written, and each view's coverage (fraction of the view marked object)."""
    coverage = derived.coverage()
    lines = [f"**Wrote** `{report.transforms}`. Training frames (with the object): {len(report.training)}; "
             f"object-free evaluation views: {len(report.evaluation)}.",
             f"Coverage: min {min(coverage):.1%}, mean {sum(coverage) / len(coverage):.1%}, "
             f"max {max(coverage):.1%}. Next: `ns-train mald-nerf --data {report.capture}`", "",
             "| view | object |", "| --- | ---: |"]
    lines += [f"| {path.name} | {value:.1%}{'' if value > 0 else ' (evaluation view)'} |"
              for path, value in zip(derived.files, coverage)]
    return "\n".join(lines)


class MasksPanel:
    """The "Object masks" panel: the box and settings as viser GUI inputs, the box drawn in the scene, the command
    line and the "Write masks" button.

    Args:
        load_config: the run's config.yml (for the command line).
        write: derives and writes the masks (:func:`open_viewer` gives the command's code path on the loaded run).
        num_views: how many views ``write`` renders (for the progress shown in the panel).
        box, settings, output: the panel's initial values.
    """

    def __init__(self, load_config: Path, write: WriteMasks, num_views: int, box: Optional[Box] = None,
                 settings: Optional[BoxMaskSettings] = None, output: Optional[Path] = None) -> None:
        self.load_config = Path(load_config)
        self._write = write
        self.num_views = num_views
        self.initial_box = box or Box((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.initial_settings = settings or BoxMaskSettings()
        self.initial_output = output
        self.scale = 1.0
        self._lock: ContextManager = contextlib.nullcontext()
        self._drawing = threading.Lock()
        self._server: Any = None

    # ------------------------------------------------------------------ GUI
    def install(self, server: Any, scale: float = 1.0, lock: Optional[Any] = None,
                crop_box: Optional[Callable[[], Box]] = None) -> None:
        """Add the panel to viser ``server``'s GUI and the box to its scene.

        Args:
            scale: viser units per world unit (nerfstudio's viewer draws its world 10 times larger).
            lock: held while the masks are derived (the viewer's render lock: both render the model).
            crop_box: gives the box of the viewer's Crop Viewport ("Use the crop box"); None = no such button.
        """
        self._server, self.scale = server, scale
        if lock is not None:
            self._lock = lock
        box, settings = self.initial_box, self.initial_settings
        gui = server.gui
        with gui.add_folder(FOLDER):
            gui.add_markdown("A box around the object, in the viewer's coordinates: every pixel whose surface lies "
                             "inside it (and is opaque) is object. Drag the gizmo or type the numbers.")
            self.center = gui.add_vector3("Box center", tuple(box.center), step=0.01,
                                          hint="Centre of the box (--box CX,CY,CZ).")
            self.size = gui.add_vector3("Box size", tuple(box.size), min=(1e-3,) * 3, step=0.01,
                                        hint="Side lengths of the box (--box SX,SY,SZ).")
            self.rotation = gui.add_vector3("Box rotation", tuple(box.rotation), step=0.01,
                                            hint="Roll, pitch, yaw in radians (--box RX,RY,RZ), as Crop rotation.")
            if crop_box is not None:
                self.use_crop = gui.add_button("Use the crop box", hint="Copy Crop center, Crop scale and Crop "
                                               "rotation of the Crop Viewport into the box.")
                self.use_crop.on_click(lambda _: self.set_box(crop_box()))
            self.min_accumulation = gui.add_number(
                "Min accumulation", float(settings.min_accumulation), min=0.0, max=1.0, step=0.01,
                hint="A pixel can be object only where the run is at least this opaque (--min-accumulation).")
            self.floor_margin = gui.add_number(
                "Floor margin", float(settings.floor_margin), min=0.0, max=0.49, step=0.01,
                hint="Surface this close to the floor under the box (fraction of the box's height) is not object; "
                     "0 = keep the floor (--floor-margin).")
            self.shadow_darkening = gui.add_number(
                "Shadow darkening", float(settings.shadow_darkening), min=0.0, max=0.99, step=0.05,
                hint="Floor touching the object's footprint this much darker than the floor around is its shadow "
                     "and joins the mask; 0 = the object alone (--shadow-darkening).")
            self.supersample = gui.add_number(
                "Supersample", int(settings.supersample), min=1, max=4, step=1,
                hint="S x S rays per pixel; a pixel is object when half of them are (--supersample).")
            self.min_component = gui.add_number(
                "Min component", float(settings.min_component), min=0.0, max=1.0, step=0.01,
                hint="Pieces of a view's mask smaller than this fraction of it are dropped (--min-component).")
            self.dilate_kernel = gui.add_number("Dilate kernel", int(settings.dilation[0]), min=0, step=1,
                                                hint="Grow each mask by a square of this many pixels (--dilate K N).")
            self.dilate_times = gui.add_number("Dilate times", int(settings.dilation[1]), min=0, step=1,
                                               hint="... this many times; 0 = no dilation (--dilate K N).")
            self.output_text = gui.add_text("Output folder", "" if self.initial_output is None
                                            else str(self.initial_output),
                                            hint="A new or empty folder: a copy of the capture with the masks.")
            self.command = gui.add_markdown("")
            self.write_button = gui.add_button("Write masks", hint="Render every frame's depth, derive its mask and "
                                               "write the capture with the masks to the output folder.")
            self.status = gui.add_markdown("")
        self.gizmo = server.scene.add_transform_controls(NODE, scale=max(0.5, 0.6 * max(box.size) * scale),
                                                         depth_test=False, line_width=3.0)
        for handle in (self.center, self.size, self.rotation):
            handle.on_update(lambda _: self.redraw())
        for handle in (self.min_accumulation, self.floor_margin, self.shadow_darkening, self.supersample,
                       self.min_component, self.dilate_kernel, self.dilate_times, self.output_text):
            handle.on_update(lambda _: self.show_command())
        self.gizmo.on_update(lambda _: self._from_gizmo())
        self.write_button.on_click(lambda _: self.write_masks())
        self.redraw()

    def box(self) -> Box:
        """The box the panel shows."""
        size = tuple(float(v) for v in self.size.value)
        if min(size) <= 0:
            raise UserFacingError(f"The box's sizes must be positive, but Box size is {size}.")
        return Box(tuple(float(v) for v in self.center.value), size,  # type: ignore[arg-type]
                   tuple(float(v) for v in self.rotation.value))  # type: ignore[arg-type]

    def settings(self) -> BoxMaskSettings:
        """The clean-up settings the panel shows (the box is in the viewer's coordinates: frame "run")."""
        return BoxMaskSettings(frame="run", min_accumulation=float(self.min_accumulation.value),
                               min_component=float(self.min_component.value),
                               dilation=(int(self.dilate_kernel.value), int(self.dilate_times.value)),
                               floor_margin=float(self.floor_margin.value),
                               shadow_darkening=float(self.shadow_darkening.value),
                               supersample=int(self.supersample.value))

    def output(self) -> Optional[Path]:
        text = self.output_text.value.strip()
        return Path(text).expanduser() if text else None

    def set_box(self, box: Box) -> None:
        """Show ``box`` in the inputs (the drawing follows)."""
        self.center.value, self.size.value, self.rotation.value = box.center, box.size, box.rotation

    def show_command(self) -> None:
        try:
            text = command_line(self.load_config, self.box(), self.settings(), self.output(), multiline=True)
        except UserFacingError as err:
            text = str(err)
        self.command.content = f"Same masks from a shell:\n\n```\n{text}\n```"

    def redraw(self) -> None:
        """Move the gizmo and the box drawn on it to the inputs' box; update the command line."""
        with self._drawing:
            try:
                box = self.box()
            except UserFacingError:
                self.show_command()
                return
            from viser import transforms as vtf

            self.gizmo.position = tuple(c * self.scale for c in box.center)
            self.gizmo.wxyz = vtf.SO3.from_rpy_radians(*box.rotation).wxyz
            corners = _CORNERS * np.asarray(box.size, dtype=np.float32) * self.scale
            scene = self._server.scene
            scene.add_mesh_simple(f"{NODE}/box", corners, _FACES, color=BOX_COLOR, opacity=0.2, side="double")
            scene.add_mesh_simple(f"{NODE}/edges", corners, _FACES, color=BOX_COLOR, wireframe=True)
            self.show_command()

    def _from_gizmo(self) -> None:
        from viser import transforms as vtf

        rpy = vtf.SO3(np.asarray(self.gizmo.wxyz)).as_rpy_radians()
        self.center.value = tuple(float(p) / self.scale for p in self.gizmo.position)
        self.rotation.value = (float(rpy.roll), float(rpy.pitch), float(rpy.yaw))

    # ------------------------------------------------------------------ writing
    def write_masks(self) -> bool:
        """Derive and write the masks of the panel's box (the "Write masks" button); the panel says what happened.

        Returns:
            Whether the capture was written.
        """
        self.write_button.disabled = True
        try:
            box, settings, output = self.box(), self.settings(), self.output()
            if output is None:
                raise UserFacingError("Type a folder in Output folder first: a copy of the capture with the masks "
                                      "is written there (a new or empty folder).")
            done: List[int] = [0]

            def progress() -> None:
                done[0] += 1
                self.status.content = f"Rendering the depth of every frame: {done[0]} of {self.num_views}"

            self.status.content = f"Rendering the depth of every frame: 0 of {self.num_views}"
            with self._lock:
                report, derived = self._write(box, settings, output, progress)
        except UserFacingError as err:
            self.status.content = f"**Nothing was written.** {err}"
            return False
        except Exception as err:  # the viewer keeps running; the console gets the traceback
            from nerfstudio.utils.rich_utils import CONSOLE

            CONSOLE.print_exception()
            self.status.content = (f"**Writing the masks failed** ({type(err).__name__}: {err}); the console that "
                                   f"runs the viewer shows the details.")
            return False
        finally:
            self.write_button.disabled = False
        self.status.content = coverage_report(report, derived)
        return True


def crop_box_of(control_panel: Any) -> Box:
    """The box of nerfstudio's Crop Viewport (``ControlPanel.crop_obb``: Crop center, Crop scale, Crop rotation)."""
    from viser import transforms as vtf

    obb = control_panel.crop_obb
    rpy = vtf.SO3.from_matrix(obb.R.double().numpy()).as_rpy_radians()
    return Box(tuple(float(v) for v in obb.T), tuple(float(v) for v in obb.S),  # type: ignore[arg-type]
               (float(rpy.roll), float(rpy.pitch), float(rpy.yaw)))


def _viewer_control(panel: MasksPanel) -> Any:
    """A nerfstudio ``ViewerControl`` that installs ``panel`` when the viewer hands itself to it."""
    from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO
    from nerfstudio.viewer.viewer_elements import ViewerControl

    class MasksPanelControl(ViewerControl):
        def _setup(self, viewer: Any) -> None:
            super()._setup(viewer)
            panel.install(viewer.viser_server, VISER_NERFSTUDIO_SCALE_RATIO, viewer.train_lock,
                          lambda: crop_box_of(viewer.control_panel))

    return MasksPanelControl()


def open_viewer(load_config: Path, box: Optional[Box], settings: BoxMaskSettings, output: Optional[Path],
                websocket_host: str, websocket_port: Optional[int]) -> None:
    """Open the run in nerfstudio's viewer, as ``ns-viewer --load-config`` does, with the panel; runs until stopped."""
    from nerfstudio.configs.base_config import ViewerConfig
    from nerfstudio.scripts.viewer.run_viewer import _start_viewer
    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.data.box_masks import masks_from_views, run_capture, run_views

    config, pipeline, _, step = eval_setup(Path(load_config), eval_num_rays_per_chunk=None, test_mode="test")
    capture = run_capture(config)
    views = run_views(config)

    def write(box: Box, settings: BoxMaskSettings, output: Path, progress: Callable[[], None]) -> Tuple[Any, Any]:
        return masks_from_views(pipeline.model, views, capture, box, settings, output, progress=progress)

    panel = MasksPanel(load_config, write, len(views), box, settings, output)
    num_rays_per_chunk = config.viewer.num_rays_per_chunk
    config.vis = "viewer"
    config.viewer = ViewerConfig(websocket_host=websocket_host, websocket_port=websocket_port,
                                 num_rays_per_chunk=num_rays_per_chunk)
    # nerfstudio's Viewer hands itself to the ViewerControls it finds on the pipeline, after building its own panels
    pipeline.object_masks_panel = _viewer_control(panel)
    _start_viewer(config, pipeline, step)


__all__: Sequence[str] = ["MasksPanel", "box_argument", "command_line", "coverage_report", "crop_box_of",
                          "open_viewer"]
