"""Resolve diffusion weights named by a Hugging Face id or a local folder, with errors a user can act on.

Users name weights by a Hub id (``nvidia/difix_ref``, ``sd2-community/stable-diffusion-2-inpainting``) or a local
folder holding the same diffusers layout. :func:`resolve_pretrained` returns the local folder to load from: the folder
itself, the Hugging Face cache, or a fresh download. When none works, :class:`ModelUnavailableError` names the id, the
download command (``hf download ID``, the Hub CLI of current ``huggingface_hub``), the folder layout it expects and
the flag that points at a local copy; for an id removed from the Hub it also names the maintained copy
(:data:`MOVED_MODELS`). Nothing is ever replaced by random weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, TypeVar, Union

from ns_diffusion_methods.errors import ModelUnavailableError

T = TypeVar("T")

#: Hub ids whose repositories were removed, and the maintained copy with the same files. Stability AI removed its
#: Stable Diffusion 2 repositories from the Hub in November 2025; a copy still in a Hugging Face cache keeps working.
MOVED_MODELS = {
    "stabilityai/stable-diffusion-2-inpainting": "sd2-community/stable-diffusion-2-inpainting",
}


def _layout_text(required: Sequence[str]) -> str:
    return "\n".join(f"    {name}" for name in required)


def check_layout(folder: Path, required: Sequence[str], *, model: str, flag: str) -> None:
    """Raise if any of the ``required`` relative paths is missing from ``folder``."""
    missing = [name for name in required if not (folder / name).exists()]
    if missing:
        raise ModelUnavailableError(
            f"The model folder {folder} (for `{model}`) is incomplete: missing {', '.join(missing)}.\n"
            f"  Expected layout:\n{_layout_text(required)}\n"
            f"  Re-download or re-save the model, or point {flag} at a complete copy.")


def load_component(load: Callable[[], T], folder: Path, component: str, *, model: str, flag: str) -> T:
    """``load()`` one component (``folder/component``, a diffusers or transformers ``from_pretrained``).

    A missing, truncated or corrupt weight file (they raise ``OSError``) becomes a :class:`ModelUnavailableError`
    naming the folder, the component and ``flag``.
    """
    try:
        return load()
    except ModelUnavailableError:
        raise
    except OSError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelUnavailableError(
            f"The model folder {folder} (for `{model}`) has no usable {component}/ weights: {first_line}\n"
            f"  Re-download or re-save the model, or point {flag} at a complete copy.") from None


def resolve_pretrained(
    name_or_path: Union[str, Path],
    *,
    required: Sequence[str] = ("model_index.json",),
    flag: str = "--model",
    allow_patterns: Optional[Iterable[str]] = None,
) -> Path:
    """The local folder holding the model ``name_or_path`` (a folder, or a Hub id cached or downloadable).

    Args:
        name_or_path: a local folder, or a Hugging Face model id such as ``nvidia/difix_ref``.
        required: relative paths the folder must contain (the diffusers layout), checked before any loading.
        flag: the command-line flag that sets this model, named in the error message.
        allow_patterns: restrict a download to these file patterns (``huggingface_hub.snapshot_download``).

    Raises:
        ModelUnavailableError: the folder is missing or incomplete, or the id is neither cached nor reachable.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    # a Hub id is "owner/name"; anything existing, absolute, relative-looking or deeper is a folder
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        if not path.is_dir():
            raise ModelUnavailableError(
                f"The model folder {path} does not exist. Point {flag} at a folder with the layout:\n"
                f"{_layout_text(required)}")
        check_layout(path, required, model=text, flag=flag)
        return path

    from huggingface_hub import snapshot_download

    try:  # the cache first: works offline and never touches the network
        folder = Path(snapshot_download(text, local_files_only=True, allow_patterns=allow_patterns))
    except Exception:  # noqa: BLE001 - not cached (any hub error means the same here)
        folder = None
    if folder is None:
        try:
            folder = Path(snapshot_download(text, allow_patterns=allow_patterns))
        except Exception as err:  # noqa: BLE001 - offline, unknown id, gated repo, ...
            cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
            moved = (f"  `{text}` was removed from the Hub; its maintained copy is `{MOVED_MODELS[text]}`: pass "
                     f"{flag} {MOVED_MODELS[text]}.\n" if text in MOVED_MODELS else "")
            raise ModelUnavailableError(
                f"The model `{text}` is not in the Hugging Face cache ({cache}) and could not be downloaded "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).\n{moved}"
                f"  Either download it on a machine with internet access (`hf download {text}`, the Hub CLI of "
                f"huggingface_hub) and copy the cache, or save it to a local folder with the layout:\n"
                f"{_layout_text(required)}\n"
                f"  and pass that folder with {flag} PATH.") from None
    check_layout(folder, required, model=text, flag=flag)
    return folder
