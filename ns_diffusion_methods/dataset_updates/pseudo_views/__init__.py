"""Progressive pseudo views: novel cameras that walk from the training cameras toward target views (Difix3D).

Difix3D (Wu et al., CVPR 2025, https://arxiv.org/abs/2503.01774) improves a reconstruction in the views a user cares
about by training on *pseudo views*: renders of novel cameras, repaired by a 2D fixer. Fixing a render far from every
training view fails, so the cameras move there progressively: every ``steps_per_fix`` steps each pseudo camera takes
one step from its current pose toward its target, is rendered, fixed with the nearest training image as reference,
and replaces its previous pseudo view. Each round the reconstruction is a little better a little further out.

This package is that machinery, independent of the model kind (NeRF or splats) and of the fixer:

- :mod:`.targets`: the evaluation cameras, or a camera path written by the nerfstudio viewer
  (:func:`load_camera_path`);
- :mod:`.state`: :class:`PseudoViews`, a module of registered buffers (poses, targets, intrinsics, reference indices,
  the fixed images and the render accumulations), so checkpoints carry the pseudo views and ``--load-dir`` resumes
  with them;
- :mod:`.schedule`: :class:`ProgressiveSchedule`, the hyperparameters as a gsplat-``Strategy``-like dataclass with no
  hidden state: ``initialize_state(...)`` builds the :class:`PseudoViews`, ``is_due(step)`` and
  ``advance(state, ...)`` move the cameras;
- :mod:`.rounds`: :func:`run_fix_round`, one round: render (eval mode, no gradients, OOM-tolerant), fix in batches
  through the fixer's batch API with a progress bar, split across the ranks of a multi-GPU run, and store;
- :mod:`.display`: the round's images and scalars in the training log, the pseudo cameras as frustums in the viewer.

The pose maths (pose distance, nearest camera, SLERP steps) is :mod:`ns_diffusion_methods.geometry.poses`.

Units: poses are in the dataparser's normalised space (nerfstudio scales captures into about [-1, 1]). The step is
measured in the combined distance ``translation_weight * |dt| + rotation_weight * angle`` (angle in radians, weights
1 as in the official code), and each round covers exactly ``step_size`` of it: for a pure translation that is the
official "0.5 units toward the target", and a pseudo camera's distance to its target strictly decreases by
``step_size`` every round until it arrives.

Deviations from the official code: each pseudo camera keeps its own target (the official ``shift_poses`` re-picks the
nearest current pose for every target each round, so walks can hop between chains); the rotation is SLERPed by the same
fraction as the translation instead of snapping to the target rotation when the translation is tiny; pose-distance
angles are clipped (the official arccos is not, and can give NaN).
"""

from ns_diffusion_methods.dataset_updates.pseudo_views.display import (
    log_pseudo_views,
    pseudo_view_stats,
    show_in_viewer,
)
from ns_diffusion_methods.dataset_updates.pseudo_views.rounds import FixRoundResult, run_fix_round
from ns_diffusion_methods.dataset_updates.pseudo_views.schedule import ProgressiveSchedule
from ns_diffusion_methods.dataset_updates.pseudo_views.state import PseudoViews
from ns_diffusion_methods.dataset_updates.pseudo_views.targets import load_camera_path, subsample_cameras

__all__ = [
    "FixRoundResult", "ProgressiveSchedule", "PseudoViews", "load_camera_path", "log_pseudo_views",
    "pseudo_view_stats", "run_fix_round", "show_in_viewer", "subsample_cameras",
]
