"""The nerfstudio web viewer in headless Chromium: serving processes, the page, and the viser messages it exchanges.

nerfstudio's viewer is viser: the page (viser's web client) talks to the server over one websocket carrying msgpack
messages, each a dict with a ``type`` (the message class name in :mod:`viser._messages`). :class:`ViewerPage` records
every message the page receives and sends (Playwright's websocket events), so a test can check what the page was
given (camera frustums, rendered frames, GUI elements) and what it did (camera moves, clicks, GUI changes).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import msgspec
import numpy as np
from PIL import Image
from viser import _messages as vm
from viser import transforms as vtf

#: Chromium binaries looked for on PATH (Debian: `chromium`; Ubuntu snaps and others: `chromium-browser`)
CHROMIUM_NAMES = ("chromium", "chromium-browser")

#: headless Chromium without a GPU: WebGL (three.js) through SwiftShader's software GL
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]

#: the page size: viser's control panel takes 320 px on the right, the 3D canvas the rest
VIEWPORT = {"width": 800, "height": 500}

# message types, by their viser class names (a renamed class fails here, not silently in a test)
CAMERA_FRUSTUM = vm.CameraFrustumMessage.__name__
SET_POSITION = vm.SetPositionMessage.__name__
SET_ORIENTATION = vm.SetOrientationMessage.__name__
FRAME = vm.BackgroundImageMessage.__name__
DROPDOWN = vm.GuiAddDropdownMessage.__name__
SLIDER = vm.GuiAddSliderMessage.__name__
GUI_UPDATE = vm.GuiUpdateMessage.__name__
VIEWER_CAMERA = vm.ViewerCameraMessage.__name__
VECTOR3 = vm.GuiAddVector3Message.__name__
NUMBER = vm.GuiAddNumberMessage.__name__
TEXT = vm.GuiAddTextMessage.__name__
MARKDOWN = vm.GuiAddMarkdownMessage.__name__
MESH = vm.MeshMessage.__name__
TRANSFORM_CONTROLS = vm.TransformControlsMessage.__name__
NODE_CLICK = vm.SceneNodeClickMessage.__name__


def find_chromium() -> Optional[str]:
    """The Chromium binary to drive (``NS_DIFFUSION_CHROMIUM`` if set, else the first of CHROMIUM_NAMES on PATH)."""
    explicit = os.environ.get("NS_DIFFUSION_CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def console_script(name: str) -> str:
    """The path of one of nerfstudio's console scripts (``ns-viewer``, ``ns-train``) of this Python environment."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"`{name}` is neither next to {sys.executable} nor on PATH; install nerfstudio.")
    return found


@contextlib.contextmanager
def serving(command: Sequence[str], port: int, log_path: Path, timeout: float = 240.0) -> Iterator[subprocess.Popen]:
    """Run ``command`` (a viewer server) until the ``with`` block ends; enter once ``port`` accepts connections.

    The process gets one intra-op thread (the test machine's cores are shared) and is always terminated on exit.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{command[0]} exited with code {process.returncode} before serving on port "
                                     f"{port}; its log ({log_path}) ends with:\n{tail(log_path)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{command[0]} did not serve on port {port} within {timeout:.0f} s; its log "
                                     f"({log_path}) ends with:\n{tail(log_path)}")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes (as viser sends them) -> ``[H, W, 3]`` float array in [0, 1]."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255


def block_means(image: np.ndarray, blocks: int = 12) -> np.ndarray:
    """``[blocks, blocks, 3]`` mean colours of a ``blocks x blocks`` grid over the image (any size)."""
    pil = Image.fromarray((image * 255).round().astype(np.uint8))
    return np.asarray(pil.resize((blocks, blocks), Image.BOX), dtype=np.float32) / 255


def rotation(wxyz: Sequence[float]) -> np.ndarray:
    return vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()


def frustum_image_centre(frustum: Dict[str, Any], position: np.ndarray, wxyz: Sequence[float]) -> np.ndarray:
    """World position of the centre of a camera frustum's image plane, as viser's client draws it.

    viser (``CameraFrustum`` in its client's ThreeAssets.tsx) scales the frustum ``(x, y, 1)``, ``y = tan(fov / 2)``,
    ``x = y * aspect``, to unit volume and draws the image ``scale * z`` in front of the apex along +Z (OpenCV).
    """
    y = np.tan(frustum["fov"] / 2)
    z = 1 / np.cbrt(y * y * frustum["aspect"] / 3)
    return position + rotation(wxyz) @ np.array([0.0, 0.0, frustum["scale"] * z])


class ViewerPage:
    """A viewer page in Chromium, with every viser message it received (``received``) and sent (``sent``)."""

    def __init__(self, browser: Any, url: str, failure_shot: Path) -> None:
        self.received: List[Tuple[float, Dict[str, Any]]] = []  # (arrival time, message)
        self.sent: List[Tuple[float, Dict[str, Any]]] = []
        self.errors: List[str] = []
        self.failure_shot = failure_shot
        self.page = browser.new_page(viewport=VIEWPORT)
        self.page.on("websocket", self._record)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(url)

    def __enter__(self) -> "ViewerPage":
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        """Close the page; after a failed check, keep a screenshot of it (``failure_shot``) first."""
        if error is not None:
            with contextlib.suppress(Exception):
                self.page.screenshot(path=str(self.failure_shot))
                save_artifact(self.failure_shot)
        self.page.close()

    def _record(self, websocket: Any) -> None:
        def unpack(log: List[Tuple[float, Dict[str, Any]]]) -> Callable[[Any], None]:
            def handler(payload: Any) -> None:
                if isinstance(payload, (bytes, bytearray)):
                    decoded = msgspec.msgpack.decode(payload)  # a batch (list) of messages, or one message
                    now = time.monotonic()
                    log.extend((now, message) for message in (decoded if isinstance(decoded, list) else [decoded]))
            return handler

        websocket.on("framereceived", unpack(self.received))
        websocket.on("framesent", unpack(self.sent))

    # ------------------------------------------------------------------ what the page got and did
    def got(self, kind: str, since: float = 0.0) -> List[Dict[str, Any]]:
        """Messages of type ``kind`` the page received (after ``since``, a ``time.monotonic()`` value)."""
        return [m for t, m in self.received if m.get("type") == kind and t > since]

    def did(self, kind: str, since: float = 0.0) -> List[Dict[str, Any]]:
        """Messages of type ``kind`` the page sent (after ``since``)."""
        return [m for t, m in self.sent if m.get("type") == kind and t > since]

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        """Let the page run until ``condition()`` is truthy (returned); fail naming ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"the viewer page did not get {what} within {timeout:.0f} s "
                                     f"(page errors: {self.errors or 'none'})")
            self.page.wait_for_timeout(100)

    def wait_for_frame(self, timeout: float = 60.0) -> None:
        """Let the page run until it got a rendered frame.

        nerfstudio ignores the camera a page sends before its viewer has finished starting (``Viewer.ready``), and
        renders only when the camera moves; a page that connected that early gets no frame. Then the mouse wheel
        moves the camera a little, as a user would.
        """
        with contextlib.suppress(AssertionError):
            self.wait_for(lambda: self.got(FRAME), "a rendered frame", timeout=5)
            return
        box = self.canvas_box()
        self.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        self.page.mouse.wheel(0, 20)
        self.wait_for(lambda: self.got(FRAME), "a rendered frame", timeout=timeout)

    def wait_for_quiet(self, kind: str = FRAME, quiet: float = 1.0, timeout: float = 30.0) -> None:
        """Let the page run until no ``kind`` message was received or sent for ``quiet`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = max((t for t, m in self.received + self.sent if m.get("type") == kind), default=0.0)
            if time.monotonic() - last > quiet:
                return
            self.page.wait_for_timeout(100)

    def frustums(self, prefix: str) -> Dict[str, Dict[str, Any]]:
        """The camera frustums under scene node ``prefix``: the latest message of each, with its pose added."""
        latest: Dict[str, Dict[str, Any]] = {}
        for _, message in self.received:
            name = message.get("name", "")
            if not name.startswith(prefix + "/"):
                continue
            if message["type"] == CAMERA_FRUSTUM:
                latest[name] = {**latest.get(name, {}), **message}
            elif message["type"] == SET_POSITION:
                latest.setdefault(name, {})["position"] = np.asarray(message["position"], dtype=np.float64)
            elif message["type"] == SET_ORIENTATION:
                latest.setdefault(name, {})["wxyz"] = np.asarray(message["wxyz"], dtype=np.float64)
        return {name: m for name, m in latest.items() if "fov" in m and "position" in m and "wxyz" in m}

    def gui(self, kind: str, label: str) -> Dict[str, Any]:
        """The GUI element ``label`` of type ``kind``, with every update the page received applied."""
        added = [m for m in self.got(kind) if m["label"] == label]
        assert added, f"the viewer page has no {kind} labelled {label!r}"
        element = dict(added[-1])
        for update in self.got(GUI_UPDATE):
            if update["id"] == element["id"]:
                element.update(update["updates"])
        return element

    # ------------------------------------------------------------------ the 3D canvas
    def canvas_box(self) -> Dict[str, float]:
        """The visible 3D view in page pixels (viser's canvas spans the page; the control panel covers its right)."""
        box = self.page.locator("canvas").first.bounding_box()
        camera = self.did(VIEWER_CAMERA)[-1]
        return {"x": box["x"], "y": box["y"], "width": camera["aspect"] * box["height"], "height": box["height"]}

    def project(self, point: np.ndarray) -> Optional[Tuple[float, float, float]]:
        """Page pixel ``(u, v)`` and depth of a world point seen by the page's camera (None when behind it)."""
        camera = self.did(VIEWER_CAMERA)[-1]  # T_world_camera, OpenCV convention
        local = rotation(camera["wxyz"]).T @ (point - np.asarray(camera["position"]))
        if local[2] <= 0:
            return None
        box = self.canvas_box()
        focal = box["height"] / 2 / np.tan(camera["fov"] / 2)
        return (box["x"] + box["width"] / 2 + focal * local[0] / local[2],
                box["y"] + box["height"] / 2 + focal * local[1] / local[2], float(local[2]))

    def frustums_in_view(self, prefix: str, margin: float = 8.0) -> List[Tuple[float, str, float, float]]:
        """``(depth, name, u, v)`` of the frustums whose image centre is in the view, nearest first."""
        box = self.canvas_box()
        visible = []
        for name, frustum in self.frustums(prefix).items():
            projected = self.project(frustum_image_centre(frustum, frustum["position"], frustum["wxyz"]))
            if projected is None:
                continue
            u, v, depth = projected
            if box["x"] + margin < u < box["x"] + box["width"] - margin and \
                    box["y"] + margin < v < box["y"] + box["height"] - margin:
                visible.append((depth, name, u, v))
        return sorted(visible)

    def zoom_out_until_in_view(self, prefix: str, steps: int = 30) -> List[Tuple[float, str, float, float]]:
        """Scroll the mouse wheel over the canvas (orbit zoom out) until a frustum under ``prefix`` is in view.

        The page's camera glides after a wheel step (and after the one :meth:`wait_for_frame` may take): the frustums
        are projected once it has stopped sending camera updates.
        """
        box = self.canvas_box()
        for _ in range(steps):
            self.wait_for_quiet(VIEWER_CAMERA, quiet=0.5)
            visible = self.frustums_in_view(prefix)
            if visible:
                return visible
            self.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            self.page.mouse.wheel(0, 200)
        raise AssertionError(f"no frustum under {prefix} came into view after {steps} zoom-out steps")

    def click_frustum(self, prefix: str, attempts: int = 3) -> Tuple[str, Dict[str, Any]]:
        """Click the nearest frustum in view (zooming out if none is); return the clicked node and its frustum.

        The page reports the click to the server (``SceneNodeClickMessage``), which is what nerfstudio's training
        cameras react to by moving the page's camera onto them. A click the page does not report (it took the click
        for the start of a drag) is repeated, at most ``attempts`` times.
        """
        for _ in range(attempts):
            _depth, name, u, v = self.zoom_out_until_in_view(prefix)[0]
            before = time.monotonic()
            self.page.mouse.click(u, v)
            with contextlib.suppress(AssertionError):
                clicks = self.wait_for(lambda before=before: self.did(NODE_CLICK, since=before), "a click", timeout=5)
                clicked = clicks[0]["name"]  # a frustum in front of the aimed one may take the click: the page's word
                return clicked, self.frustums(prefix)[clicked]
        raise AssertionError(f"the page reported none of {attempts} clicks on {name} at ({u:.0f}, {v:.0f}) "
                             f"(page errors: {self.errors or 'none'})")

    def screenshot(self, path: Path) -> np.ndarray:
        """Save a PNG of the page; return the visible 3D view of it as ``[H, W, 3]`` floats in [0, 1]."""
        self.page.screenshot(path=str(path))
        box = self.canvas_box()
        image = decode_image(path.read_bytes())
        top, left = round(box["y"]), round(box["x"])
        return image[top:top + int(box["height"]), left:left + int(box["width"])]

    def select(self, element: Dict[str, Any], option: str) -> None:
        """Pick ``option`` in a dropdown (a Mantine Select whose input has the element's id), as a user does."""
        self.page.locator(f"input[id='{element['id']}']").click()
        self.page.get_by_role("option", name=option, exact=True).click()


# ---------------------------------------------------------------------------------------- checks of any viewer
def check_frame_shown(page: ViewerPage, shot: Path) -> None:
    """A rendered frame arrived and is what the page's 3D view shows."""
    page.wait_for_frame()
    page.wait_for_quiet(FRAME)
    frames = [decode_image(m["rgb_bytes"]) for m in page.got(FRAME)[-2:]]
    view = page.screenshot(shot)
    # the frame fills the view; the frustums drawn over it are small from the default camera
    differences = [float(np.abs(block_means(view) - block_means(frame)).mean()) for frame in frames]
    assert min(differences) < 0.08, f"the page's 3D view does not show the rendered frame ({differences})"


def check_click_moves_onto_the_camera(page: ViewerPage, shot: Path) -> np.ndarray:
    """Clicking a training camera's frustum moves the page's camera onto it, and a frame is rendered from there
    (returned). The screenshot of that view is kept."""
    before = page.did(VIEWER_CAMERA)[-1]
    name, frustum = page.click_frustum("/cameras")

    def moved():
        return [(t, m) for t, m in page.sent if m.get("type") == VIEWER_CAMERA and
                np.allclose(m["position"], frustum["position"], atol=1e-3)]

    arrived, move = page.wait_for(moved, f"the page's camera moved onto {name}", timeout=15)[0]
    assert not np.allclose(before["position"], move["position"])
    np.testing.assert_allclose(rotation(move["wxyz"]), rotation(frustum["wxyz"]), atol=1e-3)
    page.wait_for(lambda: page.got(FRAME, since=arrived), f"a frame rendered from {name}", timeout=60)
    page.wait_for_quiet(FRAME)
    view = page.screenshot(shot)
    save_artifact(shot)
    # from the training camera, its frustum's image (the training image) is centred in the view, at the size the
    # training camera's field of view has in the page camera's; the frustum's outline covers its border
    image = decode_image(frustum["image_binary"])
    half_height = view.shape[0] / 2 * np.tan(frustum["fov"] / 2) / np.tan(move["fov"] / 2)
    half_width = half_height * frustum["aspect"]
    inner = 0.7
    rows = slice(int(view.shape[0] / 2 - inner * half_height), int(view.shape[0] / 2 + inner * half_height))
    cols = slice(int(view.shape[1] / 2 - inner * half_width), int(view.shape[1] / 2 + inner * half_width))
    margin = (1 - inner) / 2
    expected = image[int(margin * image.shape[0]):int((1 - margin) * image.shape[0]),
                     int(margin * image.shape[1]):int((1 - margin) * image.shape[1])]
    difference = float(np.abs(block_means(view[rows, cols], 8) - block_means(expected, 8)).mean())
    assert difference < 0.06, f"the view from {name} does not show its training image ({difference:.3f})"
    return decode_image(page.got(FRAME)[-1]["rgb_bytes"])


def save_artifact(path: Path) -> Path:
    """Copy a test artifact into ``$NS_DIFFUSION_TEST_ARTIFACTS`` when set (CI keeps that folder); print where it is."""
    folder = os.environ.get("NS_DIFFUSION_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(shutil.copy2(path, Path(folder) / path.name))
    print(f"viewer screenshot: {path}")
    return path


# ------------------------------------------------------------------------------------------------ method state
def check_inpainted_thumbnails(page: "ViewerPage", state: Dict[str, Any], config_path: Path) -> None:
    """mald-nerf: every training camera's thumbnail is the inpainted image of the checkpoint ``state`` (up to the
    viewer's JPEG compression), and inside the object mask it is not the captured image."""
    import yaml

    from ns_diffusion_methods.methods.mald_nerf.viewer import thumbnail

    inpainted = state["pipeline"]["datamanager.inpainted.images"].float() / 255  # [N, H, W, 3]
    expected = [thumbnail(image).astype(np.float32) / 255 for image in inpainted]
    # the captured images and object masks, as the run's datamanager loads them
    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    datamanager = config.pipeline.datamanager.setup(device="cpu", test_mode="test")
    masks = [thumbnail(m[..., None].float().expand(-1, -1, 3))[..., 0] > 127 for m in datamanager.object_masks]

    def shown() -> Optional[List[np.ndarray]]:
        frustums = page.frustums("/cameras")
        if len(frustums) != len(expected):
            return None
        images = [decode_image(frustums[f"/cameras/camera_{i:05d}"]["image_binary"]) for i in range(len(expected))]
        for image, target, mask in zip(images, expected, masks):
            if image.shape != target.shape or np.abs(image - target).mean() > 0.03 or \
                    np.abs(image - target)[mask].mean() > 0.05:
                return None
        return images

    images = page.wait_for(shown, f"the {len(expected)} inpainted images on the training cameras")
    for index, (image, mask) in enumerate(zip(images, masks)):
        captured = thumbnail(datamanager.captured[index]).astype(np.float32) / 255
        assert mask.any() and np.abs(image - captured)[mask].mean() > 0.1, index  # not the captured object
