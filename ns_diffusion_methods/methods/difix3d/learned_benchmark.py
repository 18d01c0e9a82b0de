"""Benchmark ``difix3d-learned``: Difix3D(+) with a fixer *learned on other scenes*, scored on unseen scenes.

The paper's protocol on synthetic ``sparse-views`` captures (training cameras on one 90° arc of a room, evaluation
cameras on the opposite arc), with every image that is scored kept out of everything that is trained:

1. **Fixer scenes** (``fixer_seeds``, plus ``validation_seeds`` for the fixer's held-out pairs): on each, the base
   method trains ``base_iterations`` steps on the capture's training views; ``ns-diffusion fixer-pairs``' code
   (:func:`~ns_diffusion_methods.fixers.curation.pairs_from_run`) renders its evaluation views (sparse-reconstruction
   artifacts) and its training views (under-fitting artifacts) and pairs them with the real images, the nearest
   training image as reference. ``ns-diffusion train-fixer``'s code
   (:func:`~ns_diffusion_methods.fixers.training.train_fixer`) then trains a Difix of the ``tiny`` architecture from
   random weights on the fixer scenes' pairs (L2 loss: the VGG weights of LPIPS and the Gram loss are not available
   offline), the definition's ``fixer`` settings starting with an autoencoder warm-up (clean image -> itself), the
   from-scratch stand-in for SD-Turbo's pretrained VAE. Its gain on the validation scenes' pairs (fixed vs unfixed
   PSNR) is reported.
2. **Test scenes** (``test_seeds``, disjoint from the fixer's): as ``difix3d-sparse-views`` (``benchmark.py``), the
   base trains ``base_iterations`` steps, then from that checkpoint the base and the difix3d method each train
   ``fix_iterations`` more (same total). ``ns-eval`` scores ``rgb`` on the evaluation views, and for the difix3d runs
   also ``rgb_fixed`` (Difix3D+: the learned fixer applied once more at render time). Ablations (``ablations``):
   ``identity`` (pseudo views left unfixed: what the pseudo-view training alone does), ``direct`` (no progressive
   walk: the pseudo cameras jump to their targets at the first round), ``no-reference`` (a fixer trained and used
   without reference views). ``variants`` score further settings of the method (``flags``), with the learned fixer or,
   as their own control, the identity fixer (``fixer: identity``).
3. **Families** (``families``, settings in ``family_settings``): the test protocol runs for each named backbone,
   ``nerfacto`` (``nerfacto`` vs ``difix3d-nerfacto``) and ``splat`` (the splatfacto model vs ``difix3d-splat``), with
   one fixer, learned on the pairs of the ``pairs_family`` base (like the paper's single Difix for both backbones).

:func:`plan_split` decides which captures feed what and refuses overlapping seeds; :func:`check_no_leak` verifies, on
pixel contents, that no image of a test scene is among the fixer's training or validation pairs, and that the
training set ``ns-train`` reads from each test capture holds none of its evaluation images. Both run before anything
is trained.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from rich.console import Console

from ns_diffusion_methods.errors import DataError, UserFacingError

#: the definition file, named in error messages
DEFINITION = "ns_diffusion_methods/benchmark/definitions/difix3d-learned.yaml"
#: pose step that lands every pseudo camera on its target at the first round (the "direct" ablation)
DIRECT_STEP_SIZE = 1.0e6


# ---------------------------------------------------------------------------------------------------------------
# the split


@dataclass
class Scene:
    """One synthetic capture of the benchmark."""

    seed: int
    role: str  # "fixer", "validation" or "test"
    capture: Path


@dataclass
class SplitPlan:
    """Which captures train the fixer, validate it, and are scored (see :func:`plan_split`)."""

    fixer: List[Scene] = field(default_factory=list)
    validation: List[Scene] = field(default_factory=list)
    test: List[Scene] = field(default_factory=list)

    @property
    def pair_sources(self) -> List[Scene]:
        """The scenes whose renders and images become fixer pairs (training and validation)."""
        return [*self.fixer, *self.validation]


def _seeds(params: Dict[str, Any], key: str) -> List[int]:
    value = params.get(key, [])
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, int) for s in value):
        raise UserFacingError(f"`{key}` in {DEFINITION} (or --set {key}=...) must be a list of integer seeds, "
                              f"but is {value!r}.")
    if len(set(value)) != len(value):
        raise UserFacingError(f"`{key}` lists a seed twice: {value}. Give distinct seeds.")
    return list(value)


def plan_split(params: Dict[str, Any], output_dir: Path) -> SplitPlan:
    """The captures of each role, from ``fixer_seeds``, ``validation_seeds`` and ``test_seeds``.

    A seed determines a scene (room, objects, cameras), so a seed in two roles would train on a scored scene: that is
    refused, as is a plan without fixer or test scenes.
    """
    roles = {"fixer": _seeds(params, "fixer_seeds"), "validation": _seeds(params, "validation_seeds"),
             "test": _seeds(params, "test_seeds")}
    if not roles["fixer"] or not roles["test"]:
        raise UserFacingError(f"`fixer_seeds` and `test_seeds` in {DEFINITION} must each name at least one seed.")
    names = list(roles)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            shared = sorted(set(roles[first]) & set(roles[second]))
            if shared:
                raise UserFacingError(f"Seeds {shared} are both {first} and {second} scenes in {DEFINITION}: a "
                                      f"scene that trains the fixer must never be scored. Give disjoint seeds.")
    folder = Path(output_dir) / "capture"
    return SplitPlan(**{role: [Scene(seed, role, folder / f"{role}-{seed}") for seed in seeds]
                        for role, seeds in roles.items()})


def write_captures(plan: SplitPlan, capture_args: Dict[str, Any],
                   pair_source_args: Optional[Dict[str, Any]] = None) -> None:
    """Write every capture of the plan (``write_sparse_views`` with the scene's seed); ``pair_source_args`` override
    ``capture_args`` for the fixer and validation scenes (e.g. more evaluation views: more pairs)."""
    from ns_diffusion_methods.synthetic import write_sparse_views

    for scene in plan.pair_sources:
        write_sparse_views(scene.capture, seed=scene.seed, **{**capture_args, **(pair_source_args or {})})
    for scene in plan.test:
        write_sparse_views(scene.capture, seed=scene.seed, **capture_args)


def image_digest(path: Path) -> str:
    """A hash of an image's decoded pixels (copies re-encoded as PNG hash equal)."""
    from ns_diffusion_methods.data.images import read_image

    array = read_image(path)
    return hashlib.sha1(array.tobytes() + str(array.shape).encode()).hexdigest()


def capture_images(capture: Path, split: str) -> List[Path]:
    """The image files nerfstudio's ``nerfstudio-data`` dataparser (what ``ns-train``/``ns-eval`` use on these
    captures) gives for ``split`` ("train", "val" or "test")."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    outputs = NerfstudioDataParserConfig(data=Path(capture)).setup().get_dataparser_outputs(split=split)
    return [Path(p) for p in outputs.image_filenames]


def pair_images(pairs_json: Path) -> List[Path]:
    """Every image file a Difix pairs file lists (degraded, target and reference; both splits)."""
    data = json.loads(Path(pairs_json).read_text())
    root = Path(pairs_json).parent
    return [root / entry[key] for split in ("train", "test") for entry in data.get(split, {}).values()
            for key in ("image", "target_image", "ref_image") if key in entry]


def check_no_leak(plan: SplitPlan, pairs_files: Iterable[Path] = ()) -> Dict[str, int]:
    """Refuse a benchmark in which a scored image could be trained on.

    Checks, on pixel contents: no image of a test capture (training or evaluation view) is among the pairs in
    ``pairs_files`` (what the fixer trains and is validated on); for each test capture, ``ns-train``'s training
    split holds none of its evaluation images. Returns counts of what was compared.
    """
    test_digests: Dict[str, Path] = {}
    eval_count = 0
    for scene in plan.test:
        train_files = capture_images(scene.capture, "train")
        eval_files = capture_images(scene.capture, "test")
        eval_count += len(eval_files)
        train_digests = {image_digest(p): p for p in train_files}
        for path in eval_files:
            digest = image_digest(path)
            if digest in train_digests or path in train_files:
                raise DataError(f"Evaluation image {path} of test scene {scene.seed} is in ns-train's training split "
                                f"(as {train_digests.get(digest, path)}): the capture's split is broken.")
            test_digests[digest] = path
        test_digests.update(train_digests)
    compared = 0
    for pairs_json in pairs_files:
        for path in pair_images(pairs_json):
            compared += 1
            digest = image_digest(path)
            if digest in test_digests:
                raise DataError(f"The fixer pair image {path} ({pairs_json}) has the pixels of {test_digests[digest]}, "
                                f"an image of a test scene: the fixer would be trained on a scored scene. Keep test "
                                f"seeds out of fixer_seeds and validation_seeds in {DEFINITION}.")
    return {"test_images": len(test_digests), "test_eval_images": eval_count, "pair_images": compared}


# ---------------------------------------------------------------------------------------------------------------
# the fixer


def make_pairs(plan: SplitPlan, base_entry: Dict[str, Any], iterations: int, output_dir: Path,
               console: Console) -> Dict[str, Any]:
    """Train the base on every fixer/validation scene and write their pairs (evaluation views: sparse-view
    artifacts; training views: under-fitting artifacts) into ``output_dir/pairs/data.json``; the validation scenes'
    pairs form its "test" split. Returns the file and the base runs' PSNR on their evaluation views."""
    from ns_diffusion_methods.benchmark.nerfstudio_runs import latest_checkpoint
    from ns_diffusion_methods.fixers.curation import pairs_from_run
    from ns_diffusion_methods.methods.difix3d.benchmark import _train

    pairs_dir = output_dir / "pairs"
    index = pairs_dir / "data.json"
    base_psnr = {}
    validation_prefixes = []
    for scene in plan.pair_sources:
        console.rule(f"[bold]{scene.role} scene {scene.seed}[/bold]: {base_entry['method']} for {iterations} steps")
        run = _train(base_entry["method"], scene.capture, output_dir / "runs" / f"{scene.role}-{scene.seed}",
                     base_entry, iterations, [])
        latest_checkpoint(run["config"])
        base_psnr[scene.seed] = float(run["results"]["psnr"])
        for split in ("eval", "train"):
            prefix = f"{scene.role}-{scene.seed}-{split}-"
            pairs_from_run(run["config"], pairs_dir, split=split, reference=True, test_fraction=0.0, prefix=prefix)
            if scene.role == "validation":
                validation_prefixes.append(prefix)
    data = json.loads(index.read_text())
    for name in [n for n in data["train"] if n.startswith(tuple(validation_prefixes))]:
        data["test"][name] = data["train"].pop(name)
    index.write_text(json.dumps(data, indent=2, sort_keys=True))
    return {"pairs": index, "base_psnr": base_psnr}


def without_references(pairs_json: Path) -> Path:
    """A copy of a pairs file without reference images (``data-noref.json`` beside it)."""
    data = json.loads(Path(pairs_json).read_text())
    for split in data.values():
        for entry in split.values():
            entry.pop("ref_image", None)
    target = Path(pairs_json).with_name("data-noref.json")
    target.write_text(json.dumps(data, indent=2, sort_keys=True))
    return target


def unfixed_psnr(pairs_json: Path, split: str = "test") -> float:
    """Mean PSNR of the degraded renders against their clean images (per pair, as ``evaluate_fixer``)."""
    from ns_diffusion_methods.data.images import load_image
    from ns_diffusion_methods.metrics.image import psnr

    values = [float(psnr(load_image(r.image)[None], load_image(r.target)[None]))
              for r in _records(pairs_json, split)]
    return sum(values) / len(values)


def _records(pairs_json: Path, split: str):
    from ns_diffusion_methods.fixers.training import read_pairs

    return read_pairs(pairs_json, split)


def train_learned_fixer(pairs_json: Path, output: Path, settings: Dict[str, Any], console: Console
                        ) -> Dict[str, Any]:
    """``ns-diffusion train-fixer`` on the pairs (``settings``: its fields); returns the model folder, the held-out
    PSNR before/after and the unfixed PSNR of the held-out pairs."""
    from ns_diffusion_methods.fixers.training import FixerTrainingConfig, train_fixer

    options = {"model": "tiny", "resolution": None, "num_steps": 1500, "batch_size": 4, "learning_rate": 1e-3,
               "lpips_loss_mult": 0.0, "gram_loss_mult": 0.0, "steps_per_save": 0, "steps_per_eval": 500,
               "max_eval_pairs": 64, "steps_per_log": 100, "device": "cpu", "seed": 0, **settings}
    if isinstance(options.get("resolution"), list):
        options["resolution"] = tuple(options["resolution"])
    start = time.perf_counter()
    result = train_fixer(FixerTrainingConfig(data=pairs_json, output=output, **options), console=console)
    seconds = time.perf_counter() - start
    info: Dict[str, Any] = {"model": result.model_dir, "seconds": seconds,
                            "train_pairs": len(_records(pairs_json, "train"))}
    if result.evaluations:
        info.update(test_pairs=len(_records(pairs_json, "test")), unfixed_psnr=unfixed_psnr(pairs_json),
                    fixed_psnr=result.evaluations[-1]["psnr"], untrained_psnr=result.evaluations[0]["psnr"])
        info["gain_db"] = info["fixed_psnr"] - info["unfixed_psnr"]
    return info


# ---------------------------------------------------------------------------------------------------------------
# rows


def _metric_row(method: str, seed: int, results: Dict[str, Any], suffix: str = "", family: Optional[str] = None,
                **extra: Any) -> Dict[str, Any]:
    row: Dict[str, Any] = {"kind": "test", **({"family": family} if family is not None else {}), "method": method,
                           "seed": seed}
    for metric in ("psnr", "ssim", "lpips"):
        if f"{metric}{suffix}" in results:
            row[metric] = round(float(results[f"{metric}{suffix}"]), 4)
    row.update(extra)
    return row


def _spread(values: Sequence[float]) -> Dict[str, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}


def summary_rows(rows: List[Dict[str, Any]], base_method: Union[str, Dict[str, str]]) -> List[Dict[str, Any]]:
    """Per family and method over the test seeds: mean and standard deviation of PSNR, SSIM, the PSNR gain over the
    base of the same family and seed, and of the wall-time ratio. ``base_method``: the base's label, or a mapping
    family -> base label (rows carry ``family``)."""
    bases = base_method if isinstance(base_method, dict) else None
    tests = [r for r in rows if r.get("kind") == "test"]

    def base_of(family: Optional[str]) -> str:
        return bases.get(family, "") if bases is not None else str(base_method)

    per_seed_base = {(r.get("family"), r["seed"]): r for r in tests if r["method"] == base_of(r.get("family"))}
    groups: List[tuple] = []
    for r in tests:
        if (r.get("family"), r["method"]) not in groups:
            groups.append((r.get("family"), r["method"]))
    summary = []
    for family, method in groups:
        group = [r for r in tests if r.get("family") == family and r["method"] == method]
        row: Dict[str, Any] = {"kind": "summary", "method": method, "seed": f"mean ± std, n={len(group)}"}
        if family is not None:
            row = {"kind": "summary", "family": family, **{k: v for k, v in row.items() if k != "kind"}}
        for metric in ("psnr", "ssim"):
            values = [r[metric] for r in group if metric in r]
            if values:
                spread = _spread(values)
                row[metric], row[f"{metric}_std"] = round(spread["mean"], 3), round(spread["std"], 3)
        gains = [r["psnr"] - per_seed_base[(family, r["seed"])]["psnr"] for r in group
                 if (family, r["seed"]) in per_seed_base]
        if gains and method != base_of(family):
            spread = _spread(gains)
            row["psnr_gain_db"], row["psnr_gain_std"] = round(spread["mean"], 2), round(spread["std"], 2)
            row["wins"] = f"{sum(g > 0 for g in gains)}/{len(gains)}"
        ratios = [r["wall_ratio"] for r in group if isinstance(r.get("wall_ratio"), (int, float))]
        if ratios:
            row["wall_ratio"] = round(statistics.fmean(ratios), 2)
        summary.append(row)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# the benchmark


IDENTITY_FLAGS = ["pipeline.fixer:identity"]


def _fixer_flags(model: Path) -> List[str]:
    return ["pipeline.fixer:difix", "--pipeline.fixer.model", str(model)]


@dataclass
class Family:
    """One backbone the test protocol runs on: its base and its difix3d method (``family_settings`` entries)."""

    name: str
    base: Dict[str, Any]
    difix: Dict[str, Any]
    base_label: str
    difix_label: str


def select_families(params: Dict[str, Any]) -> List[Family]:
    """The families named in ``families`` (default: ``nerfacto``), with their ``family_settings``."""
    settings = params.get("family_settings") or {}
    names = params.get("families", ["nerfacto"])
    if isinstance(names, str):
        names = [names]
    if not names or not isinstance(names, (list, tuple)) or len(set(names)) != len(names):
        raise UserFacingError(f"`families` in {DEFINITION} (or --set families=[...]) must be a list of distinct "
                              f"family names from `family_settings` ({sorted(settings)}), but is {names!r}.")
    families = []
    for name in names:
        if name not in settings:
            raise UserFacingError(f"Family {name!r} has no entry in `family_settings` of {DEFINITION}: use one of "
                                  f"{sorted(settings)}, or add its base and difix methods there.")
        entry = settings[name]
        if "base" not in entry or "difix" not in entry:
            raise UserFacingError(f"`family_settings.{name}` in {DEFINITION} needs `base` and `difix` (each a "
                                  f"`method` with its `flags`).")
        families.append(Family(name, entry["base"], entry["difix"], entry.get("base_label", entry["base"]["method"]),
                               entry.get("difix_label", entry["difix"]["method"])))
    return families


def pairs_base(params: Dict[str, Any]) -> Dict[str, Any]:
    """The base method whose renders make the fixer's pairs (``pairs_family``, default ``nerfacto``)."""
    settings = params.get("family_settings") or {}
    name = params.get("pairs_family", "nerfacto")
    if name not in settings:
        raise UserFacingError(f"`pairs_family: {name}` in {DEFINITION} is not in `family_settings` "
                              f"({sorted(settings)}).")
    return settings[name]["base"]


def run(spec: Dict[str, Any], output_dir: Path, console: Console) -> List[Dict[str, Any]]:
    """Run the benchmark (see the module docstring); returns per-seed rows, summary rows and the fixer's rows."""
    from ns_diffusion_methods.benchmark.nerfstudio_runs import latest_checkpoint
    from ns_diffusion_methods.methods.difix3d.benchmark import _train, has_fixer

    params = spec.get("params", {})
    plan = plan_split(params, output_dir)
    families = select_families(params)
    ablations = list(params.get("ablations", []))
    unknown = sorted(set(ablations) - {"identity", "direct", "no-reference"})
    if unknown:
        raise UserFacingError(f"Unknown ablations {unknown} in {DEFINITION}: use identity, direct, no-reference.")
    for variant in params.get("variants", []):
        if not isinstance(variant, dict) or "label" not in variant or variant.get("fixer", "learned") not in (
                "learned", "identity"):
            raise UserFacingError(f"Each of `variants` in {DEFINITION} needs a `label`, optional `flags` and optional "
                                  f"`fixer` (learned or identity), but got {variant!r}.")
    base_iterations = int(params.get("base_iterations", 100))
    fix_iterations = int(params.get("fix_iterations", 100))
    fixing = ["--pipeline.fix-start-step", str(base_iterations),
              "--pipeline.steps-per-fix", str(params.get("steps_per_fix", 10)),
              *[str(f) for f in params.get("fixing_flags", [])]]
    step_size = ["--pipeline.step-size", str(params.get("step_size", 0.5))]

    console.rule("[bold]captures and split[/bold]")
    write_captures(plan, dict(params.get("capture", {})), dict(params.get("fixer_capture", {})))
    check_no_leak(plan)

    trained = params.get("trained_fixer")
    if trained:  # a fixer this benchmark trained before: its pairs are checked against these test scenes
        pairs = Path(trained["pairs"])
        model = Path(trained["model"])
        if not pairs.is_file() or not model.is_dir():
            raise UserFacingError(f"`trained_fixer` in {DEFINITION} (or --set) names {model} (a model folder, "
                                  f"RUN/fixer/model) and {pairs} (RUN/pairs/data.json); one of them does not exist. "
                                  f"Give an earlier run's folders, or set trained_fixer=null to train a fixer.")
        counts = check_no_leak(plan, [pairs])
        fixers = {"difix": {"model": model, "seconds": 0.0, "train_pairs": len(_records(pairs, "train"))}}
        earlier = model.parent.parent / "fixer.json"  # what that run measured of its fixer (RUN/fixer.json)
        if earlier.is_file():
            measured = json.loads(earlier.read_text()).get("difix", {})
            if Path(str(measured.get("model", ""))).resolve() == model.resolve():
                fixers["difix"].update({k: v for k, v in measured.items() if k != "model"})
    else:
        made = make_pairs(plan, pairs_base(params), base_iterations, output_dir, console)
        pairs = made["pairs"]
        counts = check_no_leak(plan, [pairs])
        fixers = {"difix": train_learned_fixer(pairs, output_dir / "fixer", params.get("fixer", {}), console)}
    console.print(f"Split checked: {counts['pair_images']} pair images share no pixels with the "
                  f"{counts['test_images']} images of the test scenes; no evaluation image is in ns-train's split.")
    if "no-reference" in ablations:
        fixers["no-reference"] = train_learned_fixer(without_references(pairs), output_dir / "fixer-noref",
                                                     params.get("fixer", {}), console)
    rows: List[Dict[str, Any]] = []
    for name, info in fixers.items():
        rows.append({"kind": "fixer", "method": f"learned fixer ({'with' if name == 'difix' else 'without'} "
                                                f"reference)",
                     "seed": ",".join(str(s.seed) for s in plan.validation) or "-",
                     "psnr": round(info.get("fixed_psnr", math.nan), 3),
                     "psnr_unfixed": round(info.get("unfixed_psnr", math.nan), 3),
                     "psnr_gain_db": round(info.get("gain_db", math.nan), 2),
                     "train_pairs": info["train_pairs"], "test_pairs": info.get("test_pairs", 0),
                     "fix_phase_s": round(info["seconds"], 1)})
        console.print(f"Fixer ({name}): held-out pairs {info.get('unfixed_psnr', math.nan):.2f} -> "
                      f"{info.get('fixed_psnr', math.nan):.2f} dB ({info.get('gain_db', math.nan):+.2f})")

    learned = _fixer_flags(fixers["difix"]["model"])
    variants = [("", learned, step_size)]
    if "identity" in ablations:
        variants.append((" (identity fixer)", IDENTITY_FLAGS, step_size))
    if "direct" in ablations:
        variants.append((" (no progressive walk)", learned, ["--pipeline.step-size", str(DIRECT_STEP_SIZE)]))
    for variant in params.get("variants", []):  # further settings of the method, with the learned or identity fixer
        identity = variant.get("fixer", "learned") == "identity"
        variants.append((f" ({variant['label']}{', identity fixer' if identity else ''})",
                         IDENTITY_FLAGS if identity else learned,
                         [*step_size, *[str(f) for f in variant.get("flags", [])]]))
    if "no-reference" in ablations:
        variants.append((" (no reference)", _fixer_flags(fixers["no-reference"]["model"]), step_size))

    total = base_iterations + fix_iterations
    test_rows: List[Dict[str, Any]] = []
    for scene in plan.test:
        for family in families:
            folder = output_dir / "runs" / f"test-{scene.seed}" / family.name
            # a base that is a difix3d preset without rounds (the splat base) still needs a fixer it never calls
            base_fixer = IDENTITY_FLAGS if has_fixer(family.base["method"]) else []
            heading = f"[bold]test scene {scene.seed}, {family.name}[/bold]"
            console.rule(f"{heading}: {family.base_label} for {base_iterations} steps")
            phase1 = _train(family.base["method"], scene.capture, folder / "base", family.base, base_iterations,
                            base_fixer)
            checkpoint_dir = latest_checkpoint(phase1["config"]).parent
            console.rule(f"{heading}: {family.base_label}, {fix_iterations} more steps")
            baseline = _train(family.base["method"], scene.capture, folder / "base-continued", family.base,
                              fix_iterations, base_fixer, load_dir=checkpoint_dir)
            test_rows.append(_metric_row(family.base_label, scene.seed, baseline["results"], family=family.name,
                                         iterations=total, fix_phase_s=round(baseline["seconds"], 1),
                                         wall_ratio=1.0))
            for index, (suffix, fixer_flags, steps) in enumerate(variants):
                label = f"{family.difix_label}{suffix}"
                console.rule(f"{heading}: {label}, {fix_iterations} more steps")
                improved = _train(family.difix["method"], scene.capture, folder / f"difix3d-{index}", family.difix,
                                  fix_iterations, fixer_flags, load_dir=checkpoint_dir, extra=[*fixing, *steps])
                ratio = improved["seconds"] / baseline["seconds"]
                gain = float(improved["results"]["psnr"]) - float(baseline["results"]["psnr"])
                test_rows.append(_metric_row(label, scene.seed, improved["results"], family=family.name,
                                             iterations=total, fix_phase_s=round(improved["seconds"], 1),
                                             wall_ratio=round(ratio, 2), psnr_gain_db=round(gain, 2)))
                if "psnr_fixed" in improved["results"] and fixer_flags is not IDENTITY_FLAGS:
                    fixed_gain = float(improved["results"]["psnr_fixed"]) - float(baseline["results"]["psnr"])
                    test_rows.append(_metric_row(f"{label} + rgb_fixed (Difix3D+)", scene.seed, improved["results"],
                                                 suffix="_fixed", family=family.name, iterations=total,
                                                 psnr_gain_db=round(fixed_gain, 2)))
                console.print(f"seed {scene.seed}: {family.base_label} {baseline['results']['psnr']:.2f} dB, "
                              f"{label} {improved['results']['psnr']:.2f} dB ({gain:+.2f}), rgb_fixed "
                              f"{improved['results'].get('psnr_fixed', math.nan):.2f} dB")
    rows = [*summary_rows(test_rows, {f.name: f.base_label for f in families}), *rows, *test_rows]
    (output_dir / "fixer.json").write_text(json.dumps({k: {kk: str(vv) if isinstance(vv, Path) else vv
                                                           for kk, vv in v.items()} for k, v in fixers.items()},
                                                      indent=2))
    return rows
