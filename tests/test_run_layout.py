"""One output layout for every command: `<out>/<name>/<time>/` with config.yaml, versions.json and a summary.json
equal to the `--json` result; `<out>/<name>/latest`; run folders and `latest` wherever a checkpoint is accepted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from pc3d.errors import InputError
from pc3d.runs import RunDir, resolve_latest, update_latest

# Point-MAE / classification quickstarts cut to 1 epoch of 2 steps (seconds on CPU)
OBJECTS = ("--set", "train.epochs=1", "--set", "data.synthetic_count=26", "--set", "data.synthetic_test_count=13",
           "--device", "cpu")
PRETRAIN = ("pretrain", "point-mae", "--preset", "quickstart", "--set", "svm_probe=false", *OBJECTS)
FINETUNE = ("finetune", "cls-synthetic", "--preset", "quickstart", "--set", "data.synthetic_val_count=13", *OBJECTS)
DETECTOR = ("finetune", "det-scannet", "--preset", "quickstart", "--set", "data.synthetic_count=2", "--set",
            "data.synthetic_val_count=1", "--set", "train.epochs=1", "--set", "train.batch_size=2", "--set",
            "data.num_points=512", "--device", "cpu")
PSEUDOLABEL = ("pseudolabel", "affinity3d", "--preset", "oracle", "--set", "data.synthetic_count=2", "--set",
               "data.synthetic_rays=4000", "--device", "cpu")


def _run_json(cli, *args) -> dict:
    result = cli(*args, "--json")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert len(lines) == 1, result.out
    return json.loads(lines[0])


def assert_run_folder(result: dict, out: Path, name: str) -> Path:
    """The layout every command shares, checked against the files themselves."""
    run = Path(result["run_dir"])
    assert run.parent == out / name and run.is_dir()
    assert json.loads((run / "summary.json").read_text()) == result  # exactly what --json printed
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert isinstance(config, dict) and config
    versions = json.loads((run / "versions.json").read_text())
    assert versions["versions"]["python"] and "argv" in versions
    assert resolve_latest(out / name / "latest") == run  # the newest run of the name
    assert (out / name / "latest").resolve() == run.resolve()
    return run


# ------------------------------------------------------------------------------------------ latest


def test_latest_is_a_relative_symlink_swapped_atomically(tmp_path):
    first = RunDir.create(tmp_path, "job", stamp="20260101-000000")
    link = tmp_path / "job" / "latest"
    assert link.is_symlink() and os.readlink(link) == "20260101-000000"  # relative: the tree can move
    second = RunDir.create(tmp_path, "job", stamp="20260101-000000")  # same second: a -1 folder
    assert second.path.name == "20260101-000000-1" and os.readlink(link) == second.path.name
    assert [p.name for p in (tmp_path / "job").iterdir() if p.name.startswith(".")] == []  # no temp link left
    first.mark_latest()  # a resumed run becomes the latest again
    assert resolve_latest(link) == first.path
    # RunDir.latest orders by time stamp and counter (-10 after -9), never returns the link itself
    for _ in range(2, 11):
        RunDir.create(tmp_path, "job", stamp="20260101-000000")
    assert RunDir.latest(tmp_path, "job").path.name == "20260101-000000-10"
    moved = tmp_path / "moved"
    (tmp_path / "job").rename(moved)
    assert resolve_latest(moved / "latest") == moved / "20260101-000000-10"  # relative: still valid after a move


def test_latest_falls_back_to_a_text_file_without_symlinks(tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    run = RunDir.create(tmp_path, "job", stamp="20260102-030405")
    link = tmp_path / "job" / "latest"
    assert link.is_file() and not link.is_symlink() and link.read_text().strip() == "20260102-030405"
    assert oct(link.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # follows the umask like every output
    (run.checkpoints / "last.json").write_text("{}")
    assert resolve_latest(link / "checkpoints" / "last.json") == run.path / "checkpoints" / "last.json"
    assert RunDir.latest(tmp_path, "job").path == run.path  # the text file is not a run either
    monkeypatch.undo()
    update_latest(tmp_path / "job", run.path.name)  # symlinks again: the text file is replaced by a link
    assert link.is_symlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------ one resolver


def _fake_run(root: Path, name: str, *checkpoints: str, stamp: str = "20260101-000000") -> RunDir:
    run = RunDir.create(root, name, stamp=stamp)
    for ckpt in checkpoints:
        (run.checkpoints / ckpt).write_text("{}")
    (run.path / "config.yaml").write_text("command: finetune\n")
    return run


def test_run_folders_resolve_to_best_then_last(tmp_path):
    from pc3d.engine.checkpoint import resolve_checkpoint_path

    both = _fake_run(tmp_path, "both", "best.json", "last.json")
    for spec in (both.path, both.checkpoints, tmp_path / "both" / "latest", tmp_path / "both"):
        assert resolve_checkpoint_path(str(spec)) == str(both.checkpoints / "best.json")
    last = _fake_run(tmp_path, "last", "last.json", "step-00000004.json")
    assert resolve_checkpoint_path(str(tmp_path / "last" / "latest")) == str(last.checkpoints / "last.json")
    file = str(tmp_path / "last" / "latest" / "checkpoints" / "step-00000004.json")
    assert resolve_checkpoint_path(file) == str(last.checkpoints / "step-00000004.json")  # files pass through
    assert resolve_checkpoint_path("hf://owner/repo/model.safetensors") == "hf://owner/repo/model.safetensors"


def test_folders_without_a_checkpoint_say_what_to_pass(tmp_path):
    from pc3d.engine.checkpoint import resolve_checkpoint_path

    running = _fake_run(tmp_path, "running", "step-00000002.json", "step-00000006.json")
    with pytest.raises(InputError, match="step-00000006.json, pass that file"):
        resolve_checkpoint_path(str(tmp_path / "running" / "latest"))
    assert running.path.is_dir()
    _fake_run(tmp_path, "empty")
    with pytest.raises(InputError, match="without checkpoints/best.json or checkpoints/last.json"):
        resolve_checkpoint_path(str(tmp_path / "empty" / "latest"))
    fewshot = RunDir.create(tmp_path, "fewshot", checkpoints=False)
    _fake_run(fewshot.path, "fold0", "last.json")
    _fake_run(fewshot.path, "fold1", "last.json")
    with pytest.raises(InputError, match="few-shot run of 2 folds") as caught:
        resolve_checkpoint_path(str(tmp_path / "fewshot" / "latest"))
    hint = str(caught.value).rsplit("e.g. ", 1)[1]
    assert resolve_checkpoint_path(hint) == str(RunDir.latest(fewshot.path, "fold0").checkpoints / "last.json")


@pytest.mark.parametrize("args", [
    ("finetune", "cls-synthetic", "--from", "{empty}"),
    ("predict", "{empty}", "{cloud}"),
    ("detect", "{cloud}", "--checkpoint", "{empty}"),
    ("segment", "{cloud}", "--parts", "a,b", "--preset", "oracle", "--weights", "{empty}"),
])
def test_every_checkpoint_option_refuses_a_folder_without_checkpoints(cli, tmp_path, args):
    import numpy as np

    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    empty = _fake_run(tmp_path / "runs", "empty").path.parent / "latest"
    cloud = tmp_path / "chair_1.ply"
    write_point_cloud(cloud, PointCloud(np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)))
    result = cli(*[a.format(empty=empty, cloud=cloud) for a in args], "--out", tmp_path / "out")
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error: ") and "best.json" in lines[0], result.err
    assert not (tmp_path / "out").exists()  # refused before any run folder


# ------------------------------------------------------------------------------------------ commands


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two runs/point-mae runs and runs/cls-synthetic started with `--from runs/point-mae/latest`, in one working
    folder, as a user types them."""
    import contextlib
    import io

    import pc3d.engine.checkpoint as checkpoint_module
    from pc3d.cli import main

    root = tmp_path_factory.mktemp("work")
    cwd, real_load = Path.cwd(), checkpoint_module.load_weights
    loaded: list[str] = []

    def recording(spec, *args, **kwargs):  # which file --from really reached the trainer
        loaded.append(str(spec))
        return real_load(spec, *args, **kwargs)

    os.chdir(root)
    checkpoint_module.load_weights = recording
    try:
        outputs = []
        # the second pretraining with another seed: its weights tell which run --from reached
        for args in (PRETRAIN, (*PRETRAIN, "--seed", "1"), (*FINETUNE, "--from", "runs/point-mae/latest")):
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                assert main([*args, "--json"]) == 0
            outputs.append(json.loads(buffer.getvalue()))
        (root / "outputs.json").write_text(json.dumps({"results": outputs, "loaded": loaded}))
    finally:
        os.chdir(cwd)
        checkpoint_module.load_weights = real_load
    return root


def test_training_runs_share_the_layout_and_latest_is_the_newest(trained, monkeypatch):
    import torch

    from pc3d.engine.checkpoint import read_checkpoint

    monkeypatch.chdir(trained)
    record = json.loads(Path("outputs.json").read_text())
    first, second, finetuned = record["results"]
    assert Path(first["run_dir"]).name < Path(second["run_dir"]).name
    assert_run_folder(second, Path("runs"), "point-mae")  # latest: the newer of the two
    run = assert_run_folder(finetuned, Path("runs"), "cls-synthetic")
    assert (run / "checkpoints" / "best.json").is_file() and (run / "test_metrics.json").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["command"] == "finetune"
    # --from runs/point-mae/latest: the trainer loaded the newer pretraining's last.json (best else last: a
    # pretraining keeps no best), which differs from the older run's weights
    assert record["loaded"][0] == second["checkpoints"]["last"] and second["checkpoints"]["best"] is None
    newer = read_checkpoint(second["checkpoints"]["last"]).model_state
    older = read_checkpoint(first["checkpoints"]["last"]).model_state
    assert any(not torch.equal(v, older[k]) for k, v in newer.items())


def test_predict_takes_latest_and_writes_its_own_run(cli, trained, monkeypatch):
    import numpy as np

    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    monkeypatch.chdir(trained)
    shapes = Path("shapes")
    shapes.mkdir(exist_ok=True)
    write_point_cloud(shapes / "thing_1.ply",
                      PointCloud(np.random.default_rng(1).normal(size=(300, 3)).astype(np.float32)))
    before = sorted(p.name for p in shapes.iterdir())
    result = _run_json(cli, "predict", "runs/cls-synthetic/latest", "shapes")
    finetuned = json.loads(Path("outputs.json").read_text())["results"][2]
    assert Path(result["checkpoint_file"]) == Path(finetuned["checkpoints"]["best"])  # best before last
    run = assert_run_folder(result, Path("runs"), "predict")
    assert yaml.safe_load((run / "config.yaml").read_text())["command"] == "predict"
    assert sorted(p.name for p in shapes.iterdir()) == before  # nothing written beside the input
    # the same classifier through a checkpoint file below latest/: the same class, a newer predict run
    again = _run_json(cli, "predict", "runs/cls-synthetic/latest/checkpoints/best.json", "shapes")
    assert again["inputs"][0]["class"] == result["inputs"][0]["class"]
    assert_run_folder(again, Path("runs"), "predict")
    assert again["run_dir"] != result["run_dir"]


@pytest.mark.slow
def test_detect_takes_latest_and_shares_the_layout(cli, tmp_path, monkeypatch):
    import numpy as np

    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    monkeypatch.chdir(tmp_path)
    out = Path("runs")
    det = _run_json(cli, *DETECTOR)
    assert_run_folder(det, out, "det-scannet")
    scenes = Path("scenes")
    scenes.mkdir()
    write_point_cloud(scenes / "room.ply",
                      PointCloud(np.random.default_rng(0).uniform(0, 3, (2048, 3)).astype(np.float32)))
    detected = _run_json(cli, "detect", "scenes", "--checkpoint", "runs/det-scannet/latest")
    expected = det["checkpoints"]["best"] or det["checkpoints"]["last"]
    assert detected["checkpoint"] == expected
    run = assert_run_folder(detected, out, "detect")
    assert yaml.safe_load((run / "config.yaml").read_text())["detect"]["threshold"] == detected["threshold"]
    assert [p.name for p in scenes.iterdir()] == ["room.ply"]  # never beside the input
    assert sorted(detected["outputs"]) == ["json", "npz", "ply", "png"]
    assert all(Path(path).parent == run and Path(path).is_file() for path in detected["outputs"].values())


def test_pseudolabel_writes_a_timestamped_run_and_resumes_only_its_own_config(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = Path("runs")
    pseudo = _run_json(cli, *PSEUDOLABEL)
    first = assert_run_folder(pseudo, out, "affinity3d")
    assert (first / "sequences" / "00" / "labels").is_dir() and pseudo["labelled"] == 2
    again = _run_json(cli, *PSEUDOLABEL)  # resume (the preset's default): the same config continues its run
    assert again["run_dir"] == pseudo["run_dir"] and again["skipped"] == 2 and again["labelled"] == 0
    assert_run_folder(again, out, "affinity3d")
    changed = _run_json(cli, *PSEUDOLABEL, "--set", "affinity.enabled=false")
    assert changed["run_dir"] != pseudo["run_dir"] and changed["labelled"] == 2  # never mixed with other labels
    assert_run_folder(changed, out, "affinity3d")


# ------------------------------------------------------------------------------------------ few-shot

FEWSHOT = ("finetune", "fewshot-modelnet40", "--preset", "quickstart", "--set", "train.epochs=1", "--device", "cpu")


@pytest.mark.slow
def test_fewshot_run_folds_predict_and_resume_with_the_drift_check(cli, tmp_path, monkeypatch):
    """A few-shot run is one run folder with a run per fold; predict takes a fold (the fold's own classes) and
    refuses the whole run with what to pass; --resume is checked against the run's config.yaml and continues
    an interrupted fold from its checkpoint to the same weights as an uninterrupted run."""
    import signal

    from pc3d.engine import trainer
    from pc3d.engine.checkpoint import read_checkpoint

    whole = _run_json(cli, *FEWSHOT, "--out", tmp_path / "whole")
    parent = assert_run_folder(whole, tmp_path / "whole", "fewshot-modelnet40")
    assert yaml.safe_load((parent / "config.yaml").read_text())["method"] == "object-fewshot"
    assert [Path(r).parent.name for r in whole["fold_runs"]] == ["fold0", "fold1"]
    assert all(Path(r).parent.parent == parent for r in whole["fold_runs"])

    # predict: the whole run is refused in one line naming a fold; a fold predicts with its fold's classes
    shapes = _shapes(tmp_path / "shapes")
    refused = cli("predict", parent.parent / "latest", shapes)
    assert refused.code == 2 and refused.err.count("\n") == 1 and "fold0/latest" in refused.err
    fold0 = Path(whole["fold_runs"][0])
    classes = json.loads((fold0 / "fold.json").read_text())["classes"]
    predicted = _run_json(cli, "predict", parent / "fold0" / "latest", shapes, "--out", tmp_path / "p")
    assert predicted["method"] == "object-fewshot" and predicted["classes"] == classes and len(classes) == 5
    # the names are the fold's training classes in the fold's own order, as the trainer's data pipeline built them
    from pc3d.config import validate_preset
    from pc3d.methods.object_finetune import build_classification

    train = build_classification(validate_preset(yaml.safe_load((fold0 / "config.yaml").read_text()), "fold0"),
                                 0).train_set
    for i in range(len(train)):
        original = int(train.base[train.indices[i]]["label"])
        assert classes[int(train[i]["label"])] == train.base.classes[original]
    assert all(record["class"] in classes for record in predicted["inputs"])

    # interrupted in fold 1, step 3 (SIGTERM: the trainer checkpoints, then stops)
    def stop_in_fold1(self, flag):
        return signal.SIGTERM if self.run_dir.path.parent.name == "fold1" and self.step == 3 else 0

    job = (*FEWSHOT, "--out", tmp_path / "cut")
    monkeypatch.setattr(trainer._Trainer, "_should_stop", stop_in_fold1)
    stopped = cli(*job, "--json")
    assert stopped.code == 128 + signal.SIGTERM and stopped.out == ""
    monkeypatch.undo()
    cut = RunDir.latest(tmp_path / "cut", "fewshot-modelnet40").path
    assert not (cut / "summary.json").exists()  # no result yet
    assert (RunDir.latest(cut, "fold1").checkpoints / "step-00000003.json").is_file()

    drift = cli(*job, "--set", "shot=4", "--resume")
    assert drift.code == 2 and drift.out == "" and drift.err.count("\n") == 1
    assert "shot 5 -> 4 differs from the run's config.yaml" in drift.err
    one_fold = cli(*job, "--resume", RunDir.latest(cut, "fold0").path)
    assert one_fold.code == 2 and f"--resume {cut}" in one_fold.err

    resumed = _run_json(cli, *job, "--resume")
    assert resumed["run_dir"] == str(cut) and resumed["fold_oa"] == whole["fold_oa"]
    assert_run_folder(resumed, tmp_path / "cut", "fewshot-modelnet40")
    assert len(list((cut / "fold1").glob("2*"))) == 1  # fold 1 continued its own run, none started anew
    for ours, theirs in zip(resumed["fold_runs"], whole["fold_runs"], strict=True):
        a = read_checkpoint(Path(ours) / "checkpoints" / "last.json").model_state
        b = read_checkpoint(Path(theirs) / "checkpoints" / "last.json").model_state
        assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def _shapes(folder: Path) -> Path:
    """Three synthetic test shapes as .ply files."""
    from pc3d.data.synthetic.writer import write_synthetic

    write_synthetic("objects", folder, count=3, seed=0, points=512, preview=False)
    return folder / "shapes"


def test_plot_of_a_name_glob_draws_the_latest_run_once(cli, tmp_path):
    """`pc3d plot runs/NAME/*` also matches runs/NAME/latest: the newest run is drawn once, under its own name."""
    for stamp in ("20260101-000000", "20260102-000000"):
        run = RunDir.create(tmp_path, "mae", stamp=stamp)
        run.log_metrics({"step": 1, "epoch": 0, "loss": 1.0})
        run.log_metrics({"step": 2, "epoch": 0, "loss": 0.5})
    runs = sorted((tmp_path / "mae").iterdir())
    assert [p.name for p in runs] == ["20260101-000000", "20260102-000000", "latest"]
    result = cli("plot", *runs, "--out", tmp_path / "mae.png", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["runs"] == ["mae/20260101-000000", "mae/20260102-000000"]


def test_predict_sends_a_partstad_weight_network_to_segment(cli, tmp_path):
    """A partstad-fewshot run trains box weights for 2-D views, not a model of points: one line naming segment."""
    import numpy as np
    import torch

    from pc3d.engine.checkpoint import save_checkpoint
    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    run = RunDir.create(tmp_path / "runs", "partstad-fewshot")
    save_checkpoint(run.checkpoints / "best", {"model/network.null_weight": torch.zeros(1)},
                    {"config": {"command": "finetune", "method": "partstad-fewshot"}})
    cloud = tmp_path / "chair_1.ply"
    write_point_cloud(cloud, PointCloud(np.zeros((8, 3), np.float32)))
    result = cli("predict", tmp_path / "runs" / "partstad-fewshot" / "latest", cloud, "--out", tmp_path / "out")
    assert result.code == 2 and result.err.count("\n") == 1 and result.out == ""
    assert "pc3d segment INPUT --parts" in result.err and "--weights" in result.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("env", [{"RANK": "1", "WORLD_SIZE": "2"},
                                 {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "MASTER_ADDR": "node0"}])
def test_only_rank_zero_of_a_launched_job_writes_and_prints_the_result(tmp_path, monkeypatch, capsys, env):
    """torchrun / SLURM run the whole command on every rank: one summary.json and one JSON object per job."""
    from pc3d.cli.common import finish_run
    from pc3d.engine.distributed import outside_rank

    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    run = tmp_path / "run"
    run.mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert outside_rank() == int(env.get("RANK", env.get("SLURM_PROCID")))
    finish_run({"run_dir": str(run), "metric": 1.0}, json_out=True)
    assert capsys.readouterr().out == "" and not list(run.iterdir())
    monkeypatch.setenv("RANK" if "RANK" in env else "SLURM_PROCID", "0")
    finish_run({"run_dir": str(run), "metric": 1.0}, json_out=True)
    assert json.loads(capsys.readouterr().out)["metric"] == 1.0
    assert json.loads((run / "summary.json").read_text())["metric"] == 1.0


def test_only_rank_zero_scores_the_selected_checkpoint(monkeypatch):
    import pc3d.engine.selection as selection
    import pc3d.engine.trainer as trainer

    built = []
    monkeypatch.setattr(trainer, "fit", lambda request, build: {"checkpoints": {"last": "x"}})
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = selection.fit_and_score(object(), lambda config, rank: built.append(rank), lambda config: None)
    assert result == {"checkpoints": {"last": "x"}} and built == []  # nothing rebuilt or scored on rank 1
