"""difix3d parts without training: pseudo rays and per-image parameters, compatibility with stock nerfacto and
splatfacto (state dicts, param groups), lazy outputs, presets in config.yml, the synthetic oracle fixer."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ns_diffusion_methods.methods.difix3d.fixing import LazyOutputs, scale_learning_rates
from ns_diffusion_methods.metrics.lpips import package_lpips_in_stock_models


def scene_box():
    from nerfstudio.data.scene_box import SceneBox

    return SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))


def tiny_nerfacto_kwargs():
    return dict(implementation="torch", num_levels=4, log2_hashmap_size=10, max_res=32, hidden_dim=16,
                hidden_dim_color=16, num_proposal_samples_per_ray=(8, 8), num_nerf_samples_per_ray=8,
                appearance_embed_dim=4)


def rays(camera_index: int, count: int = 16):
    from nerfstudio.cameras.rays import RayBundle

    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=g), dim=-1)
    return RayBundle(origins=torch.zeros(count, 3), directions=directions, pixel_area=torch.full((count, 1), 1e-4),
                     camera_indices=torch.full((count, 1), camera_index, dtype=torch.long))


def test_pseudo_rays_use_no_per_training_image_parameter():
    """Camera index -1 (pseudo view): no camera-optimiser correction, the mean appearance embedding; a real index
    trains exactly its own rows (which shows the check can fail)."""
    from ns_diffusion_methods.methods.difix3d.model import Difix3DNerfactoModelConfig

    torch.manual_seed(0)
    model = Difix3DNerfactoModelConfig(**tiny_nerfacto_kwargs()).setup(scene_box=scene_box(), num_train_data=3,
                                                                        metadata={}, device="cpu")
    model.train()
    with torch.no_grad():
        model.camera_optimizer.pose_adjustment.normal_(0.0, 0.01)
    embedding = model.field.embedding_appearance.embedding.weight

    def grads(camera_index):
        model.zero_grad(set_to_none=False)
        model(rays(camera_index))["rgb"].sum().backward()
        return model.camera_optimizer.pose_adjustment.grad.clone(), embedding.grad.clone()

    pose_grad, embed_grad = grads(-1)
    assert float(pose_grad.abs().max()) == 0.0
    assert float(embed_grad.abs().max()) > 0.0
    torch.testing.assert_close(embed_grad, embed_grad[:1].expand_as(embed_grad))  # the mean: every row alike
    pose_grad, embed_grad = grads(3)  # == num_train_data: out of range is a novel view too, never an IndexError
    assert float(pose_grad.abs().max()) == 0.0
    pose_grad, embed_grad = grads(1)
    assert float(pose_grad[1].abs().max()) > 0.0 and float(pose_grad[[0, 2]].abs().max()) == 0.0
    assert float(embed_grad[1].abs().max()) > 0.0 and float(embed_grad[[0, 2]].abs().max()) == 0.0


def test_nerfacto_state_and_param_groups_match_stock_nerfacto():
    from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    from ns_diffusion_methods.methods.difix3d.config import difix3d_nerfacto_config, nerfacto_optimizers
    from ns_diffusion_methods.methods.difix3d.model import Difix3DNerfactoModelConfig

    kwargs = dict(scene_box=scene_box(), num_train_data=3, metadata={}, device="cpu")
    with package_lpips_in_stock_models():  # offline: stock nerfacto's LPIPS is unavailable, not fatal
        stock = NerfactoModelConfig(**tiny_nerfacto_kwargs(), camera_optimizer=CameraOptimizerConfig(mode="SO3xR3")
                                    ).setup(**kwargs)
    ours = Difix3DNerfactoModelConfig(**tiny_nerfacto_kwargs()).setup(**kwargs)
    assert {k: v.shape for k, v in stock.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    ours.load_state_dict(stock.state_dict(), strict=True)
    stock_groups, our_groups = stock.get_param_groups(), ours.get_param_groups()
    assert {k: [p.shape for p in v] for k, v in stock_groups.items()} == \
           {k: [p.shape for p in v] for k, v in our_groups.items()}
    assert set(our_groups) <= set(nerfacto_optimizers()) == set(difix3d_nerfacto_config().optimizers)


def test_splat_state_and_param_groups_match_stock_splatfacto():
    from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModelConfig

    from ns_diffusion_methods.methods.difix3d.config import difix3d_splat_config
    from ns_diffusion_methods.methods.difix3d.model import Difix3DSplatModelConfig

    torch.manual_seed(0)
    kwargs = dict(scene_box=scene_box(), num_train_data=3, metadata={}, device="cpu")
    with package_lpips_in_stock_models():
        stock = SplatfactoModelConfig(num_random=64).setup(**kwargs)
    ours = Difix3DSplatModelConfig(num_random=64).setup(**kwargs)
    assert {k: v.shape for k, v in stock.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    ours.load_state_dict(stock.state_dict())
    assert set(ours.get_param_groups()) == set(stock.get_param_groups())
    assert set(ours.get_param_groups()) <= set(difix3d_splat_config().optimizers)
    # seed points on the CPU (splatfacto itself calls .cuda() there)
    xyz, rgb = torch.rand(40, 3), torch.randint(0, 256, (40, 3), dtype=torch.uint8)
    seeded = Difix3DSplatModelConfig().setup(**kwargs, seed_points=(xyz, rgb))
    torch.testing.assert_close(seeded.means.data, xyz)
    torch.testing.assert_close(seeded.features_dc.data, RGB2SH(rgb.float() / 255.0))
    assert seeded.features_rest.shape == (40, 15, 3) and float(seeded.features_rest.abs().max()) == 0.0


def test_splat_model_renders_on_cpu_with_gradients():
    from nerfstudio.cameras.cameras import Cameras

    from ns_diffusion_methods.methods.difix3d.model import Difix3DSplatModelConfig

    torch.manual_seed(0)
    model = Difix3DSplatModelConfig(num_random=200, random_scale=1.0, sh_degree=1).setup(
        scene_box=scene_box(), num_train_data=1, metadata={}, device="cpu")
    model.train()
    model.step_cb(type("Optimizers", (), {"optimizers": {}})(), step=0)
    c2w = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 2.5]]])
    camera = Cameras(camera_to_worlds=c2w, fx=30.0, fy=30.0, cx=16.0, cy=12.0, width=32, height=24)
    outputs = model.get_outputs(camera)
    assert outputs["rgb"].shape[-1] == 3 and float(outputs["accumulation"].max()) > 0.1
    outputs["rgb"].sum().backward()
    assert float(model.means.grad.abs().max()) > 0
    assert model.info["means2d"].absgrad is not None


def test_lazy_outputs_compute_only_what_is_read():
    calls = []

    def compute():
        calls.append(1)
        return torch.ones(2)

    outputs = LazyOutputs({"rgb": torch.zeros(2)}, {"rgb_fixed": compute})
    assert "rgb_fixed" in outputs and list(outputs.keys()) == ["rgb", "rgb_fixed"]
    assert torch.equal(outputs["rgb"], torch.zeros(2)) and not calls  # ns-render / viewer read only what they show
    assert torch.equal(outputs["rgb_fixed"], torch.ones(2)) and len(calls) == 1
    assert torch.equal(outputs["rgb_fixed"], torch.ones(2)) and len(calls) == 1  # cached
    copied = dict(LazyOutputs({"a": 1}, {"b": lambda: 2}))  # dict(...) goes through __getitem__
    assert copied == {"a": 1, "b": 2}


def test_learning_rates_scale_with_their_schedulers():
    from nerfstudio.engine.optimizers import AdamOptimizerConfig, Optimizers
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    params = {"means": [torch.nn.Parameter(torch.zeros(2))], "scales": [torch.nn.Parameter(torch.zeros(2))]}
    config = {"means": {"optimizer": AdamOptimizerConfig(lr=1.0), "scheduler": ExponentialDecaySchedulerConfig(
        lr_final=0.01, max_steps=100)}, "scales": {"optimizer": AdamOptimizerConfig(lr=0.5), "scheduler": None}}
    optimizers = Optimizers(config, params)
    optimizers.scheduler_step_all(0)
    before = optimizers.optimizers["means"].param_groups[0]["lr"]
    changed = scale_learning_rates(optimizers, {"means": 0.1, "scales": 0.2, "absent": 5.0})
    assert changed == pytest.approx({"means": 0.1 * before, "scales": 0.1})
    optimizers.scheduler_step_all(1)  # the scheduler keeps the lowered rate
    assert optimizers.optimizers["means"].param_groups[0]["lr"] < 0.1 * before


@pytest.mark.parametrize("name", ["difix3d_nerfacto", "difix3d_nerfacto_small", "difix3d_splat",
                                  "difix3d_splat_small"])
def test_presets_survive_config_yml(name):
    from ns_diffusion_methods.methods.difix3d import config as presets

    spec = getattr(presets, name)
    assert spec.config.method_name == name.replace("_", "-")
    text = yaml.dump(spec.config)
    assert yaml.load(text, Loader=yaml.Loader) == spec.config


def test_oracle_fixer_renders_the_ground_truth_of_nerfstudio_cameras(sparse_views_capture, tmp_path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from PIL import Image

    from ns_diffusion_methods.fixers.oracle import OracleFixerConfig

    outputs = NerfstudioDataParserConfig(data=sparse_views_capture).setup().get_dataparser_outputs("train")
    cameras = outputs.cameras[:2]
    truth = torch.stack([torch.from_numpy(__import__("numpy").asarray(Image.open(f))).float() / 255.0
                         for f in outputs.image_filenames[:2]]).permute(0, 3, 1, 2)
    renders = torch.rand_like(truth)  # the oracle ignores the renders
    context = dict(cameras=cameras, dataparser_transform=outputs.dataparser_transform,
                   dataparser_scale=outputs.dataparser_scale)
    exact = OracleFixerConfig(scene=sparse_views_capture / "scene.json", blur_sigma=0.0, noise_std=0.0).setup()
    fixed = exact.fix(renders, None, **context)
    assert float((fixed - truth).abs().max()) <= 1.5 / 255  # the capture's own images, up to 8-bit rounding
    degraded = OracleFixerConfig(scene=sparse_views_capture / "scene.json").setup().fix(renders, None, **context)
    mse = float(((degraded - truth) ** 2).mean())
    assert 1e-5 < mse < 1e-2  # lightly degraded: not exact, not far
    with pytest.raises(ValueError, match="cameras"):
        exact.fix(renders)
    transforms = tmp_path / "dataparser_transforms.json"
    transforms.write_text(json.dumps({"transform": outputs.dataparser_transform.tolist(),
                                      "scale": float(outputs.dataparser_scale)}))
    from_file = OracleFixerConfig(scene=sparse_views_capture / "scene.json", dataparser_transforms=transforms,
                                  blur_sigma=0.0, noise_std=0.0).setup()
    torch.testing.assert_close(from_file.fix(renders, None, cameras=cameras), fixed)


def _parse(*args: str):
    """``ns-train ARGS`` parsed exactly as nerfstudio's ns-train parses it (the config it would train)."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    return tyro.cli(AnnotatedBaseConfigUnion, args=list(args))


def test_the_fixer_backend_is_a_subcommand_with_its_own_flags(tmp_path):
    from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig
    from ns_diffusion_methods.fixers.identity import IdentityFixerConfig
    from ns_diffusion_methods.fixers.oracle import OracleFixerConfig

    base = ("difix3d-nerfacto-small", "--data", str(tmp_path), "--pipeline.max-targets", "3")
    default = _parse(*base).pipeline
    assert type(default.fixer) is DifixFixerConfig and default.fixer.model == "nvidia/difix_ref"
    identity = _parse(*base, "pipeline.fixer:identity").pipeline
    assert type(identity.fixer) is IdentityFixerConfig and identity.max_targets == 3
    assert identity.pretrained_models() == {}  # nothing pretrained: never marked untrained
    difix = _parse(*base, "pipeline.fixer:difix", "--pipeline.fixer.model", "tiny", "--pipeline.fixer.dtype",
                   "float32").pipeline.fixer
    assert difix == DifixFixerConfig(model="tiny", dtype="float32")
    # before or after the dataparser subcommand
    oracle = _parse(*base, "nerfstudio-data", "--eval-mode", "filename", "pipeline.fixer:oracle",
                    "--pipeline.fixer.scene", str(tmp_path / "scene.json"), "--pipeline.fixer.noise-std", "0")
    assert oracle.pipeline.fixer == OracleFixerConfig(scene=tmp_path / "scene.json", noise_std=0.0)
    assert oracle.pipeline.datamanager.dataparser.eval_mode == "filename"
    after = _parse(*base, "pipeline.fixer:identity", "colmap").pipeline
    assert type(after.fixer) is IdentityFixerConfig
    assert type(after.datamanager.dataparser).__name__ == "ColmapDataParserConfig"
    with pytest.raises(SystemExit):  # a backend's flag without its subcommand is refused, not silently ignored
        _parse(*base, "--pipeline.fixer.model", "tiny")


@pytest.mark.parametrize("backend", ["difix", "identity", "oracle"])
def test_a_config_with_each_fixer_backend_survives_config_yml(backend, tmp_path):
    config = _parse("difix3d-splat-small", "--data", str(tmp_path), f"pipeline.fixer:{backend}")
    loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
    assert loaded == config and type(loaded.pipeline.fixer) is type(config.pipeline.fixer)


def test_ns_train_help_lists_the_fixer_backends(capsys):
    with pytest.raises(SystemExit) as info:
        _parse("difix3d-nerfacto", "--help")
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for backend in ("difix", "identity", "oracle"):
        assert f"pipeline.fixer:{backend}" in text
    with pytest.raises(SystemExit):
        _parse("difix3d-nerfacto", "pipeline.fixer:difix", "--help")
    assert "--pipeline.fixer.model" in capsys.readouterr().out


def test_the_benchmark_selects_the_oracle_with_flags_where_a_method_has_a_fixer(tmp_path):
    from ns_diffusion_methods.fixers.oracle import OracleFixerConfig
    from ns_diffusion_methods.methods.difix3d.benchmark import has_fixer, oracle_flags

    assert not has_fixer("nerfacto") and has_fixer("difix3d-nerfacto-small") and has_fixer("difix3d-splat-small")
    flags = oracle_flags(tmp_path, {"oracle": {"blur_sigma": 0.25, "noise_std": 0.02}})
    config = _parse("difix3d-splat-small", "--data", str(tmp_path), "--pipeline.fix-start-step", "5", *flags)
    assert config.pipeline.fixer == OracleFixerConfig(scene=tmp_path / "scene.json", blur_sigma=0.25, noise_std=0.02)
    assert config.pipeline.fix_start_step == 5
