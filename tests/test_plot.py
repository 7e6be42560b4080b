"""`pc3d plot` and pc3d.viz.curves: metrics.jsonl of one or more runs -> one PNG; one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pc3d.viz.curves import read_curves, select_panels


def _run(root: Path, name: str, scale: float = 1.0, epochs: int = 3) -> Path:
    """A run folder as the trainer leaves it: training records by step, epoch records with val/* metrics."""
    folder = root / name / "20250101-120000"
    folder.mkdir(parents=True)
    records = []
    for epoch in range(epochs):
        for i in range(1, 5):
            step = epoch * 4 + i
            loss = scale * math.exp(-step / 5)
            records.append({"step": step, "epoch": epoch, "lr": 1e-3, "loss": loss, "mse": loss,
                            "grad_norm": 1.0 / step, "samples_per_s": 100.0})
        records.append({"step": step, "epoch": epoch, "split": "epoch", "loss": loss, "mse": loss,
                        "val/oa": 0.5 + 0.1 * epoch * scale})
    text = "".join(json.dumps(r) + "\n" for r in records)
    (folder / "metrics.jsonl").write_text(text)
    return folder


def _one_line_error(result, *needles: str) -> None:
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error: "), result.err
    assert result.out == ""
    for needle in needles:
        assert needle in lines[0], lines[0]


def _pixels(path: Path):
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        return image.convert("RGB")


def test_plot_two_runs_in_one_png(cli, tmp_path):
    a, b = _run(tmp_path, "mae"), _run(tmp_path, "mode", scale=0.5)
    out = tmp_path / "cmp.png"
    result = cli("plot", a, b / "metrics.jsonl", "--out", out, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["runs"] == ["mae/20250101-120000", "mode/20250101-120000"]
    # mse repeats the loss in both runs: one panel; the learning rate and speed are not metrics
    assert summary["panels"] == ["loss", "grad_norm", "val/oa"]
    image = _pixels(out)
    assert list(image.size) == summary["size"]
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    assert (0, 114, 178) in colours and (213, 94, 0) in colours  # one colour per run


def test_plot_selects_metrics_and_talks_to_people_on_stderr(cli, tmp_path):
    run = _run(tmp_path, "mae")
    result = cli("plot", run, "--metrics", "oa,loss", "--out", tmp_path / "few.png")
    assert result.code == 0 and result.out == ""
    assert "few.png" in result.err and "val/oa, loss" in result.err
    assert _pixels(tmp_path / "few.png").width == 2 * 420


def test_plot_errors_are_one_line_exit_2(cli, tmp_path):
    _one_line_error(cli("plot", tmp_path / "nope", "--out", tmp_path / "x.png"), "nope", "no such run")
    (tmp_path / "empty").mkdir()
    _one_line_error(cli("plot", tmp_path / "empty", "--out", tmp_path / "x.png"), "no metrics.jsonl")
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    _one_line_error(cli("plot", tmp_path / "empty", "--out", tmp_path / "x.png"), "no logged losses or metrics")
    run = _run(tmp_path, "mae")
    _one_line_error(cli("plot", run, "--metrics", "miou", "--out", tmp_path / "x.png"), "miou", "val/oa")
    _one_line_error(cli("plot", run, "--out", tmp_path / "x.jpg"), "PNG")
    _one_line_error(cli("plot", "--out", tmp_path / "x.png"), "RUN")
    assert not list(tmp_path.glob("x.*"))


def test_read_curves_skips_cut_lines_notes_and_non_finite_values(tmp_path):
    run = _run(tmp_path, "mae", epochs=1)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 4, "epoch": 1, "split": "resume", "checkpoint": "x", "changes": {}}) + "\n")
        handle.write('{"step": 5, "epoch": 1, "loss": NaN}\n{"step": 6, "ep')  # a job killed mid-line
    curves = read_curves(run)
    assert curves.curves["loss"].x == [1, 2, 3, 4] and curves.curves["loss"].axis == "step"
    assert curves.curves["val/oa"].x == [1] and curves.curves["val/oa"].axis == "epoch"
    assert "checkpoint" not in curves.curves and "lr" not in curves.curves
    assert select_panels([curves], ["mse"]) == ["mse"]  # asked for by name, it is drawn


def test_plot_into_a_folder(cli, tmp_path):
    run = _run(tmp_path, "mae")
    result = cli("plot", run, "--out", run, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["out"] == str(run / "curves.png") and (run / "curves.png").is_file()
