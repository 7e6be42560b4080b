"""Training output for cluster logs: plain unwrapped progress lines on stderr (also with --json), train.log,
curves.png, and a line when TensorBoard is asked for but missing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pc3d.engine.logs import MetricSink, TrainLog, format_duration
from pc3d.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
# Point-MAE quickstart cut to 2 epochs of 2 steps (26 objects, batch 13), a log line per step: seconds on CPU
JOB = ["pretrain", "point-mae", "--preset", "quickstart", "--set", "train.epochs=2", "--set", "train.log_every=1",
       "--set", "data.synthetic_count=26", "--set", "data.synthetic_test_count=13", "--device", "cpu"]
# a progress line: which epoch and step, the loss, then speed or epoch time after " | "
PROGRESS = re.compile(r"^epoch \d+/\d+ step \d+/\d+ loss \S+ .*\| .*(samples/s|s/epoch) (eta|total) \S+$")
TENSORBOARD_INSTALLED = importlib.util.find_spec("tensorboard") is not None


def _pc3d(*args: str | Path) -> subprocess.CompletedProcess:
    """The console script as a cluster job runs it: stdout and stderr are pipes, COLUMNS says 80."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "pc3d", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


def _progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("epoch ")]


def _assert_unwrapped(text: str) -> None:
    lines = _progress_lines(text)
    assert lines, text
    for line in lines:
        assert PROGRESS.match(line), f"not one whole progress line: {line!r}"
    # what wrapping at 80 columns produced: a value alone on the next line
    assert not [line for line in text.splitlines() if re.fullmatch(r"\s*[-+.\deE]+\s*", line)], text


def _assert_png_with_content(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    assert rgb.width > 100 and rgb.height > 100
    darkest, lightest = rgb.convert("L").getextrema()
    assert darkest < lightest, "a blank image"
    assert len(rgb.getcolors(maxcolors=1 << 20)) > 10  # lines, text and colours, not a flat fill


@pytest.fixture(scope="module")
def json_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("runs")
    return _pc3d(*JOB, "--out", out, "--json"), out


def test_json_keeps_stdout_one_object_and_stderr_shows_progress(json_run):
    proc, _ = json_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.strip().splitlines()) == 1
    result = json.loads(proc.stdout)
    assert isinstance(result, dict) and Path(result["run_dir"]).is_dir()
    _assert_unwrapped(proc.stderr)
    lines = _progress_lines(proc.stderr)
    assert sum("samples/s" in line for line in lines) == 4  # one per log interval (log_every=1, 4 steps)
    epochs = [line for line in lines if "s/epoch" in line]
    assert len(epochs) == 2 and "val/svm_acc" in epochs[-1] and "total" in epochs[-1]
    assert "training " + result["run_dir"] in proc.stderr  # the start line names the run folder


def test_train_log_has_the_progress_lines(json_run):
    proc, _ = json_run
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    log = (run_dir / "train.log").read_text()
    stamped = [line.split(" ", 2)[2] for line in log.splitlines()]  # "YYYY-MM-DD HH:MM:SS message"
    assert _progress_lines(proc.stderr) == _progress_lines("\n".join(stamped))
    assert any(line.startswith(f"training {run_dir}") for line in stamped)


def test_curves_png_is_written_at_the_end(json_run):
    proc, _ = json_run
    _assert_png_with_content(Path(json.loads(proc.stdout)["run_dir"]) / "curves.png")


@pytest.mark.skipif(TENSORBOARD_INSTALLED, reason="needs an environment without tensorboard")
def test_tensorboard_by_default_is_used_when_installed_and_silent_when_not(json_run):
    proc, _ = json_run
    assert not [line for line in proc.stderr.splitlines() if "tensorboard" in line.lower()]
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    assert not (run_dir / "tensorboard").exists()


def test_missing_tensorboard_is_said_once_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    notes: list[str] = []
    sink = MetricSink(RunDir(tmp_path), tensorboard=True, note=notes.append)
    sink.log({"step": 1, "epoch": 0, "loss": 1.0})
    sink.close()
    assert len(notes) == 1 and "tensorboard" in notes[0] and "\n" not in notes[0]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
    MetricSink(RunDir(tmp_path), tensorboard=False, note=notes.append)
    MetricSink(RunDir(tmp_path), tensorboard=None, note=notes.append)  # the default: only when installed
    assert len(notes) == 1  # not asked for: nothing to say


def test_plain_log_has_lines_and_an_uncut_summary(tmp_path):
    proc = _pc3d(*JOB, "--set", "svm_probe=false", "--set", "train.epochs=1", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""
    _assert_unwrapped(proc.stderr)
    last = next(tmp_path.glob("point-mae/*/checkpoints/last.json"))
    assert str(last.resolve()) in proc.stderr or str(last) in proc.stderr  # the full path, not `…/checkpoints/l…`
    assert "…" not in proc.stderr


def test_quiet_silences_stderr_but_not_train_log(cli, tmp_path):
    result = cli(*JOB, "--set", "svm_probe=false", "--set", "train.epochs=1", "--out", tmp_path, "--quiet")
    assert result.code == 0, result.err
    assert result.err == "" and result.out == ""
    log = next(tmp_path.glob("point-mae/*/train.log")).read_text()
    assert len(_progress_lines("\n".join(line.split(" ", 2)[2] for line in log.splitlines()))) == 3


def test_train_log_appends_whole_lines_with_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        log = TrainLog(tmp_path / "train.log")
        log.write("first")
        log.write("second")
    finally:
        os.umask(previous)
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["first", "second"]
    assert (tmp_path / "train.log").stat().st_mode & 0o777 == 0o640


def test_durations_are_short():
    assert [format_duration(s) for s in (0.4, 12, 62, 3 * 3600 + 5 * 60 + 9)] == ["0s", "12s", "1m02s", "3h05m"]
