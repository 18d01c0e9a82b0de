"""The benchmark runner: definitions are checked, rows become JSON, Markdown and a plot; bad names fail clearly."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ns_diffusion_methods.benchmark.runner import load_definition, markdown_table, run_benchmark
from ns_diffusion_methods.errors import UserFacingError


def rows_for_test(spec, output_dir, console):
    """A `python` benchmark entry: squares of the params, so the report can be checked by hand."""
    return [{"name": f"n{n}", "value": float(n * n) * spec["params"]["scale"]} for n in spec["params"]["numbers"]]


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_python_benchmark_writes_json_markdown_and_plot(tmp_path):
    definition = _write(tmp_path / "squares.yaml", """
        name: squares
        description: squares of numbers
        kind: python
        entry: test_runner:rows_for_test
        params: {numbers: [1, 2, 3], scale: 1.0}
        columns: [name, value]
        plot: {x: name, y: value}
    """)
    paths = run_benchmark(str(definition), tmp_path / "out", overrides={"scale": 2.0})
    report = json.loads(paths["json"].read_text())
    assert [r["value"] for r in report["rows"]] == [2.0, 8.0, 18.0]
    assert report["environment"]["versions"]["nerfstudio"] == "1.1.5"
    markdown = paths["markdown"].read_text()
    assert "| n3 | 18 |" in markdown and "Device:" in markdown
    assert paths["plot"].stat().st_size > 0


def test_definitions_are_checked(tmp_path):
    bad_kind = _write(tmp_path / "a.yaml", "name: a\ndescription: x\nkind: nope\n")
    with pytest.raises(UserFacingError, match="kind"):
        load_definition(bad_kind)
    no_entries = _write(tmp_path / "b.yaml", "name: b\ndescription: x\nkind: train-eval\ncapture: {kind: objects}\n")
    with pytest.raises(UserFacingError, match="entries"):
        load_definition(no_entries)


def test_every_shipped_definition_loads():
    from ns_diffusion_methods.benchmark.runner import available_benchmarks, find_definition

    names = available_benchmarks()
    assert "nerfacto-baseline" in names
    for name in names:
        load_definition(find_definition(name))


def test_markdown_table_formats_missing_values():
    assert markdown_table([{"a": 1.23456, "b": None}], ["a", "b", "c"]).splitlines()[-1] == "| 1.235 |  |  |"


def test_unknown_benchmark_is_a_clear_error_without_traceback():
    result = subprocess.run([sys.executable, "-m", "ns_diffusion_methods.cli.main", "benchmark", "no-such-benchmark"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "No benchmark named `no-such-benchmark`" in result.stderr and "nerfacto-baseline" in result.stderr
    assert "Traceback" not in result.stderr


def test_default_output_folder_is_timestamped_under_outputs(tmp_path, monkeypatch):
    definition = _write(tmp_path / "squares.yaml", """
        name: squares
        description: squares of numbers
        kind: python
        entry: test_runner:rows_for_test
        params: {numbers: [2], scale: 1.0}
    """)
    monkeypatch.chdir(tmp_path)
    paths = run_benchmark(str(definition))
    (run,) = (tmp_path / "outputs" / "ns-diffusion" / "benchmark" / "squares").iterdir()
    assert paths["json"] == Path("outputs/ns-diffusion/benchmark/squares") / run.name / "results.json"
    assert (run / "results.md").is_file()


def test_help_lists_the_benchmarks_as_a_positional_name(capsys):
    from ns_diffusion_methods.cli.main import main

    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "usage: ns-diffusion benchmark [-h] NAME" in help_text
    for name in ("nerfacto-baseline", "ssdnerf-objects", "renderdiffusion-objects"):
        assert name in help_text


REPRODUCTION = """
    name: repro
    description: a method on data the user downloaded
    kind: train-eval
    data_help: Download it from somewhere.
    params: {data: null}
    captures: [{path: "${data}"}]
    dataparser: [nerfstudio-data]
    entries:
      - {name: m, method: nerfacto, paper: {psnr: 17.29}}
      - {name: gpu-only, method: splatfacto, requires_cuda: true, paper: {psnr: 17.66}}
    metrics: [psnr]
"""


def test_a_reproduction_benchmark_without_its_data_says_how_to_pass_it(tmp_path):
    definition = _write(tmp_path / "repro.yaml", REPRODUCTION)
    with pytest.raises(UserFacingError, match=r"--set data=PATH`\. Download it from somewhere\."):
        run_benchmark(str(definition), tmp_path / "out")
    with pytest.raises(UserFacingError, match=r"missing of benchmark `repro` does not exist.*--set data=PATH"):
        run_benchmark(str(definition), tmp_path / "out", overrides={"data": str(tmp_path / "missing")})


def test_a_reproduction_benchmark_trains_on_the_given_folder_with_paper_numbers_beside(tmp_path, monkeypatch):
    import ns_diffusion_methods.benchmark.nerfstudio_runs as runs
    import ns_diffusion_methods.benchmark.runner as runner

    scene = tmp_path / "scene_7"
    scene.mkdir()
    trained = []

    def train_run(method, data, run_dir, flags, dataparser):
        trained.append((method, data, dataparser))
        return run_dir / "config.yml", 12.0

    monkeypatch.setattr(runs, "train_run", train_run)
    monkeypatch.setattr(runs, "eval_run", lambda config, path: {"results": {"psnr": 18.5, "ssim": 0.6}})
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: False)
    definition = _write(tmp_path / "repro.yaml", REPRODUCTION)
    rows = json.loads(run_benchmark(str(definition), tmp_path / "out",
                                    overrides={"data": str(scene)})["json"].read_text())["rows"]
    assert trained == [("nerfacto", scene, ["nerfstudio-data"])]
    assert rows[0] == {"capture": "scene_7", "name": "m", "method": "nerfacto", "psnr": 18.5, "paper_psnr": 17.29,
                       "train_s": 12.0, "status": "ok"}
    assert rows[1]["status"] == "skipped (needs CUDA)" and rows[1]["paper_psnr"] == 17.66


def test_captures_need_a_kind_or_a_path(tmp_path):
    definition = _write(tmp_path / "c.yaml", "name: c\ndescription: x\nkind: train-eval\ncaptures: [{seed: 1}]\n"
                                             "entries: [{name: a, method: nerfacto}]\n")
    with pytest.raises(UserFacingError, match="`kind`.*or `path`"):
        load_definition(definition)


def test_set_takes_several_values_at_once_or_one_per_flag(tmp_path, monkeypatch):
    import ns_diffusion_methods.benchmark.commands as commands
    from ns_diffusion_methods.cli.main import main

    seen = []
    monkeypatch.setattr(commands, "run_benchmark", lambda name, output, overrides: seen.append(overrides) or {})
    for args in (["--set", "seed=1", "scale=2.5"], ["--set", "seed=1", "--set", "scale=2.5"]):
        assert main(["benchmark", "nerfacto-baseline", *args]) == 0
    assert seen == [{"seed": 1, "scale": 2.5}] * 2
