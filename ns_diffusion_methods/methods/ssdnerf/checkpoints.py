"""SSDNeRF checkpoints that scale with the number of training objects.

Every training object has a code ``[3, C, R, R]`` and its own Adam moments of the same shape: at SRN-cars scale
(2458 objects, C = 6, R = 128) each of ``codes_pre``, ``code_exp_avg`` and ``code_exp_avg_sq`` is 2.9 GB in float32,
8.7 GB together. Written as plain buffers of ``state_dict()``, a checkpoint held all of it, ``torch.save`` copied each
CUDA buffer whole to the CPU first, and with ``save_only_latest_checkpoint`` the atomic write needed the old and the
new checkpoint on disk at once (17.4 GB). Here:

- **Codes exact, moments in bfloat16.** ``codes_pre`` is saved in float32, bit for bit, so a resumed run continues
  from exactly the codes it stopped at. The Adam moments are saved in bfloat16 (``--pipeline.checkpoint-moments``;
  ``float32`` keeps them exact too). bfloat16 has float32's exponent range, so ``exp_avg_sq`` (squared gradients,
  which float16 would flush to zero below 6e-8) keeps its magnitude; the relative rounding error is at most 2^-8
  (0.4 %), and the Adam updates after a resume differ by about as much (measured in the README). This halves the
  moments: 8 instead of 12
  bytes per code element, 5.8 GB for SRN cars.
- **Written piece by piece.** The trainer's checkpoint writer
  (:func:`ns_diffusion_methods.engine.trainer.atomic_torch_save`) takes the three buffers as
  :class:`~ns_diffusion_methods.engine.trainer.StreamedTensor` s and writes them in chunks of objects
  (``--pipeline.checkpoint-chunk-objects``): each chunk is copied to the CPU, converted and written at its place in
  the file, so saving needs one chunk of extra memory, not a copy of the codes.
- **One file, loaded as before.** The checkpoint stays a single ordinary ``step-N.ckpt`` (``torch.load`` gives the
  same keys ``_model.codes_pre``, ``_model.code_exp_avg``, ...; only the moments' dtype differs), written to the
  partial folder and moved into place with ``os.replace`` like every checkpoint of the package: a kill at any moment
  leaves the previous checkpoint the newest complete one, and ``ns-eval``, ``ns-render``, ``ns-viewer`` and
  ``--load-dir`` load it through nerfstudio's usual path. Checkpoints written before (float32 moments) load
  unchanged.
- **Sharded over GPUs, one file all the same.** On several GPUs each rank holds only its own objects' buffers
  (:class:`~ns_diffusion_methods.engine.distributed.Shard`). The writers then gather chunk by chunk
  (:func:`~ns_diffusion_methods.engine.distributed.gathered_chunks`: every rank adds its rows of the chunk into zeros
  on rank 0, one chunk of extra memory per rank) and rank 0 writes the same single file, objects in their global
  order, so a run resumes with any number of GPUs (each rank copies its own objects' rows when it loads).
- **Loading copies chunk by chunk.** :meth:`SSDNeRFModel._load_from_state_dict` copies the loaded buffers into the
  model's (possibly CUDA) buffers a chunk of objects at a time, converting bfloat16 moments to float32 per chunk, so
  loading holds the checkpoint's tensors (2/3 of the old size) and the model's buffers, never a further full copy.

A separate store of per-object shard files was considered and not chosen: nerfstudio's loaders (``eval_setup``,
``Trainer._load_checkpoint``) pass the pipeline only the loaded state, not the checkpoint's path, so shards would have
to be found through absolute paths (which break when a run folder is moved), and every name in
``nerfstudio_models/`` must parse as ``step-N.*``, so shards could not live next to the checkpoints without
nerfstudio taking a shard that landed before its checkpoint for the newest step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Literal

import torch
from torch import Tensor

from ns_diffusion_methods.engine.distributed import gathered_chunks

if TYPE_CHECKING:
    from ns_diffusion_methods.engine.trainer import StreamedTensor
    from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModel

#: the per-object buffers of shape ``[N, 3, C, R, R]``
CODE_BUFFERS = ("codes_pre", "code_exp_avg", "code_exp_avg_sq")
#: every per-object buffer: the codes, their moments and the Adam step count ``[N]`` of each object
PER_OBJECT_BUFFERS = CODE_BUFFERS + ("code_steps",)
#: the Adam moments among them (saved in the configured precision; the codes always in float32)
MOMENT_BUFFERS = ("code_exp_avg", "code_exp_avg_sq")

MomentsPrecision = Literal["bfloat16", "float32"]


def saved_dtype(name: str, moments: MomentsPrecision) -> torch.dtype:
    """The dtype buffer ``name`` has in a checkpoint."""
    if name == "code_steps":
        return torch.long
    return getattr(torch, moments) if name in MOMENT_BUFFERS else torch.float32


def code_state_bytes(num_objects: int, code_numel: int, moments: MomentsPrecision) -> int:
    """Bytes of the three per-object buffers in a checkpoint (codes float32, moments ``moments``; the step counts,
    8 bytes per object, not included)."""
    moment_size = torch.empty((), dtype=getattr(torch, moments)).element_size()
    return num_objects * code_numel * (4 + 2 * moment_size)


def streamed_code_state(model: "SSDNeRFModel", prefix: str, moments: MomentsPrecision = "bfloat16",
                        chunk_objects: int = 64) -> Dict[str, "StreamedTensor"]:
    """``{prefix + name: StreamedTensor}`` for the per-object buffers, to replace them in a checkpoint's state dict:
    written ``chunk_objects`` objects at a time, moments in ``moments``, all training objects in their global order
    (on several GPUs gathered from the ranks that own them: every rank must write, see
    :func:`~ns_diffusion_methods.engine.distributed.gathered_chunks`)."""
    from ns_diffusion_methods.engine.trainer import StreamedTensor

    if chunk_objects < 1:
        raise ValueError(f"checkpoint_chunk_objects must be >= 1, but is {chunk_objects}.")
    entries = {}
    for name in PER_OBJECT_BUFFERS:
        buffer = getattr(model, name)
        entries[prefix + name] = StreamedTensor(
            shape=(model.num_objects, *buffer.shape[1:]), dtype=saved_dtype(name, moments),
            pieces=lambda buffer=buffer: gathered_chunks(buffer, model.shard, chunk_objects))
    return entries


@torch.no_grad()
def load_code_state(model: "SSDNeRFModel", state_dict: Dict[str, Tensor], prefix: str,
                    chunk_objects: int = 64) -> None:
    """Copy the per-object buffers of ``state_dict`` (all training objects) into ``model``'s (the objects it owns:
    all of them in one process), ``chunk_objects`` objects at a time (any saved dtype: float32, or bfloat16
    moments), and point ``state_dict``'s entries at the model's buffers so that ``nn.Module``'s own loading of them
    is a no-op. Entries that are missing or of another shape are left to ``nn.Module``'s loading, which reports
    them."""
    owned = model.shard.items
    for name in PER_OBJECT_BUFFERS:
        key = prefix + name
        buffer = getattr(model, name)
        saved = state_dict.get(key)
        if (not isinstance(saved, Tensor) or saved is buffer or saved.dim() != buffer.dim()
                or saved.shape[0] != model.num_objects or saved.shape[1:] != buffer.shape[1:]):
            continue
        for start in range(0, buffer.shape[0], chunk_objects):
            rows = owned[start:start + chunk_objects]
            chunk = saved[rows] if model.shard.world_size > 1 else saved[start:start + chunk_objects]
            buffer[start:start + chunk_objects].copy_(chunk.to(buffer.device).to(buffer.dtype))
        state_dict[key] = buffer

