"""Finding presets from the CLI: `pc3d presets`, --print-config, did-you-mean, help examples that run, `pc3d info`."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from pc3d.cli import app
from pc3d.cli.resume import rewrite_resume_argv
from pc3d.config import available_presets, preset_catalog

RUN_COMMANDS = ["pretrain", "finetune", "pseudolabel", "segment", "detect"]
# the preset an inference command runs when --preset is not given (its positional is the input file)
DEFAULT_PRESET = {"segment": "partstad", "detect": "det-scannet"}


def _listing(cli, *args: str) -> dict:
    result = cli("presets", *args, "--json")
    assert result.code == 0, result.err
    assert len(result.out.strip().splitlines()) == 1
    return json.loads(result.out)


def test_presets_lists_every_shipped_preset_once_with_its_variants(cli):
    listing = _listing(cli)
    listed = [e["name"] for e in listing["presets"]] + [v["preset"] for e in listing["presets"] for v in e["variants"]]
    assert sorted(listed) == sorted(available_presets())  # each of the shipped files, once
    by_name = {e["name"]: e for e in listing["presets"]}
    mae = by_name["point-mae"]
    assert mae["command"] == "pretrain" and mae["description"].startswith("Point-MAE pretraining on ShapeNet-55")
    quick = {v["name"]: v for v in mae["variants"]}["quickstart"]
    # the description is the leading comment's first sentence, not the YAML `description` key
    assert quick["description"] == ("Point-MAE on the embedded synthetic objects: a small model that trains on "
                                    "CPU in about a minute.")
    # a variant of another command is its own preset, not a variant: affinity3d (pseudolabel) vs -semantickitti
    assert "semantickitti" not in {v["name"] for v in by_name["affinity3d"]["variants"]}
    assert by_name["affinity3d-semantickitti"]["command"] == "finetune"
    assert Path(listing["folder"]).is_dir()


def test_presets_of_one_command(cli):
    pretrain = {e["name"]: e for e in _listing(cli, "pretrain")["presets"]}
    # sonata, pointins and geomask3d inherit their command through `extends`
    assert sorted(pretrain) == ["geomask3d", "point-mae", "point-mode", "pointins", "sonata"]
    assert {"ablation-no-odr", "quickstart", "large"} <= {v["name"] for v in pretrain["pointins"]["variants"]}
    detect = _listing(cli, "detect")["presets"]
    assert [e["name"] for e in detect] == ["det-scannet"] and detect[0]["run_by"] == ["detect"]
    text = cli("presets", "segment")
    assert text.code == 0 and text.out.startswith("partstad (segment): ")
    assert "--preset oracle" in text.out
    assert cli("presets", "nonsense").code == 2


@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_help_names_every_preset_of_the_command(cli, command):
    out = cli(command, "--help").out
    catalog = preset_catalog()
    expected = [DEFAULT_PRESET[command]] if command in DEFAULT_PRESET else \
        [n for n in available_presets(command) if catalog[n].base is None]
    for name in expected:
        assert re.search(rf"^\s+{re.escape(name)}\s", out, re.M), name
        for variant in (i.variant for i in catalog.values() if i.base == name):
            assert variant in out, (name, variant)


def _commands() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            paths.append(path)

    walk(root, [])
    return paths


def _parse(args: list[str]) -> dict:
    """Parse with the real click tree (unknown options fail), as main() would after its --resume rewrite."""
    root = typer.main.get_command(app)
    args = rewrite_resume_argv(args)
    ctx = root.make_context("pc3d", [args[0]], resilient_parsing=True)
    cmd, name, rest = root.get_command(ctx, args[0]), args[0], args[1:]
    while getattr(cmd, "commands", None):  # `data synth`: walk down the groups
        ctx = cmd.make_context(name, [rest[0]], parent=ctx, resilient_parsing=True)
        cmd, name, rest = cmd.get_command(ctx, rest[0]), rest[0], rest[1:]
    return cmd.make_context(name, rest, parent=ctx).params


def _examples(help_text: str) -> list[list[str]]:
    lines = []
    for line in help_text.splitlines():
        words = shlex.split(line.strip()) if "pc3d " in line else []
        if words and "pc3d" in words and (words[0] == "pc3d" or words[words.index("pc3d") - 1] == "-m"):
            lines.append(words[words.index("pc3d") + 1:])
    return lines


def test_every_help_example_parses_and_its_presets_and_keys_exist(cli):
    """Every example line in every --help: options exist, the preset exists, each --set key validates for it."""
    from pc3d.cli.common import resolve_config

    checked = 0
    for path in _commands():
        text = cli(*path, "--help").out
        assert "see the list above" not in text, path
        set_examples = re.findall(r"e\.g\. --set (\S+)", " ".join(text.split()))  # help text wraps
        for words in _examples(text):
            params = _parse(words)
            command = words[0]
            if command not in RUN_COMMANDS:
                checked += 1
                continue
            name = DEFAULT_PRESET.get(command) or params.get("method") or params.get("task") or params.get("name")
            also = ("finetune",) if command == "detect" else ()
            config = resolve_config(command, name, params.get("preset"), params.get("set_") or [], {}, also)
            assert config.command in (command, *also)
            checked += 1
        if path[0] in RUN_COMMANDS:  # the --set option's own example holds for the command's default preset
            name = DEFAULT_PRESET.get(path[0]) or sorted(n for n in available_presets(path[0])
                                                         if preset_catalog()[n].base is None)[0]
            assert set_examples, path
            resolve_config(path[0], name, None, [e.rstrip(")") for e in set_examples], {},
                           ("finetune",) if path[0] == "detect" else ())
    assert checked >= 15


CHECKPOINT_OPTIONS = ("--from", "--checkpoint", "-c", "--weights", "--resume")


def _checkpoint_examples(cli) -> list[tuple[tuple[str, ...], str]]:
    """(command path, runs/... value) of every checkpoint an example in a --help passes."""
    found = []
    for path in _commands():
        for words in _examples(cli(*path, "--help").out):
            values = [words[i + 1] for i, w in enumerate(words[:-1]) if w in CHECKPOINT_OPTIONS]
            if words[0] == "predict":
                values.append(words[1])
            found += [(tuple(path), v) for v in values if v.startswith("runs/")]
    return found


def test_help_examples_with_run_folders_and_latest_resolve(cli, tmp_path, monkeypatch):
    """Every runs/NAME/<time>[/...] and runs/NAME/latest[/...] a --help example passes resolves to a checkpoint
    file once NAME has run (a run folder with its checkpoints), as the commands resolve them."""
    from pc3d.engine.checkpoint import resolve_checkpoint_path
    from pc3d.runs import RunDir, resolve_latest

    monkeypatch.chdir(tmp_path)
    examples = _checkpoint_examples(cli)
    assert sum("latest" in value for _, value in examples) >= 5, examples
    stamp = "20260101-120000"
    for _, value in examples:
        name = value.split("/")[1]
        if not (Path("runs") / name).exists():
            run = RunDir.create("runs", name, stamp=stamp)
            (run.path / "config.yaml").write_text("command: finetune\n")
            for ckpt in ("best.json", "last.json", "step-00000010.json"):
                (run.checkpoints / ckpt).write_text("{}")
        concrete = value.replace("<time>", stamp)
        if value.startswith("runs/fewshot-"):  # a few-shot run: its folds are the runs with checkpoints
            continue
        resolved = Path(resolve_checkpoint_path(concrete))
        assert resolved.is_file() and resolved.parent == Path("runs", name, stamp, "checkpoints"), value
        assert resolve_latest(concrete).exists()
    assert any(v.startswith("runs/fewshot-") for _, v in examples)  # predict's few-shot example: a fold
    fewshot = RunDir.create("runs", "fewshot-modelnet40", stamp=stamp, checkpoints=False)
    fold = RunDir.create(fewshot.path, "fold0", stamp=stamp)
    (fold.checkpoints / "best.json").write_text("{}")
    value = next(v for _, v in examples if v.startswith("runs/fewshot-"))
    assert resolve_checkpoint_path(value) == str(fold.checkpoints / "best.json")


def test_detect_help_names_every_accepted_format(cli):
    from pc3d.io.pointcloud import read_point_cloud  # noqa: F401  (the reader detect uses)

    out = " ".join(cli("detect", "--help").out.split())
    for ext in (".ply", ".pcd", ".npy", ".npz", ".txt", ".xyz", ".bin", ".off", ".obj", ".stl"):
        assert ext in out


def test_print_config_prints_the_resolved_yaml_and_runs_nothing(cli, tmp_path):
    result = cli("pretrain", "point-mae", "--preset", "quickstart", "--set", "train.epochs=3", "--out", tmp_path,
                 "--print-config")
    assert result.code == 0, result.err
    config = yaml.safe_load(result.out)
    assert config["train"]["epochs"] == 3 and config["model"]["dim"] == 96 and config["run"]["out"] == str(tmp_path)
    assert not any(tmp_path.iterdir())
    as_json = cli("segment", "chair.ply", "--parts", "a,b", "--preset", "oracle", "--print-config", "--json")
    assert as_json.code == 0 and json.loads(as_json.out)["method"] == "partstad"
    assert len(as_json.out.strip().splitlines()) == 1
    bad = cli("finetune", "cls-synthetic", "--set", "optim.lrr=1", "--print-config")
    assert bad.code == 2 and "optim.lrr: unknown key" in bad.err and bad.out == ""


@pytest.mark.parametrize("args,suggestion", [
    (("pretrain", "point-ma"), "did you mean point-mae?"),
    (("pretrain", "point-mae", "--preset", "quickstrat"), "did you mean quickstart?"),
    (("finetune", "cls-modelnet"), "did you mean cls-modelnet40?"),
    (("detect", "scene.ply", "--preset", "quikstart"), "did you mean quickstart?"),
])
def test_unknown_preset_suggests_the_closest_of_the_command(cli, args, suggestion):
    result = cli(*args)
    assert result.code == 2 and result.out == ""
    line = result.err.strip()
    assert "\n" not in line and line.startswith("pc3d: error: unknown") and suggestion in line
    assert f"`pc3d presets {args[0]}`" in line
    assert "sonata" not in line and "partstad" not in line  # not the list of every shipped preset


def test_info_reports_versions_devices_backend_and_folders(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli("info", "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    import torch

    from pc3d import __version__

    assert info["pc3d"] == __version__ and info["torch"]["version"] == torch.__version__
    assert info["torch"]["cuda_available"] == torch.cuda.is_available()
    assert len(info["torch"]["devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert info["hub"]["HF_HUB_OFFLINE"] == "1" and info["hub"]["cache"]
    assert Path(info["presets"]["folder"]).is_dir() and info["presets"]["count"] == len(available_presets())
    assert info["sparse_backend"]["backend"]  # a backend name or "unknown", never missing
    text = cli("info")
    assert text.code == 0 and f"pc3d: {__version__}" in text.out and "sparse_backend.backend: " in text.out


def test_info_survives_a_missing_sparse_backend(cli, monkeypatch):
    import pc3d.models.sparse as sparse

    monkeypatch.delattr(sparse, "backend_name")
    result = cli("info", "--json")
    assert result.code == 0 and json.loads(result.out)["sparse_backend"]["backend"] == "unknown"


def test_new_commands_keep_the_cli_import_light():
    code = "import sys, pc3d.cli; print([m for m in ('torch', 'huggingface_hub', 'open3d') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
