"""`pc3d segment INPUT... --parts`: folders and globs, the 2-D models built once, outputs in the run folder (never
next to the inputs), one JSON object for the batch, a missing input refused before any model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

PARTS = "arm,back,leg,seat"


@pytest.fixture(scope="module")
def chairs(tmp_path_factory) -> Path:
    """Two synthetic chairs (with their part labels, which the oracle detector needs) alone in a folder."""
    from pc3d.data.synthetic.writer import write_synthetic

    folder = tmp_path_factory.mktemp("chairs")
    for seed in (0, 1):  # two seeds: two different chairs (the 6th shape is a chair, see test_partstad_cli.py)
        out = tmp_path_factory.mktemp("objects")
        write_synthetic("objects", out, count=6, seed=seed, points=1024, preview=False)
        found = sorted((out / "shapes").glob("chair_*.ply"))
        assert found, sorted(p.name for p in (out / "shapes").iterdir())
        shutil.copy(found[0], folder / f"chair_000{seed + 1}.ply")
    return folder


def _listing(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture
def model_count(monkeypatch) -> list[int]:
    from pc3d.methods import partstad

    calls: list[int] = []
    real = partstad.TwoDModels

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(partstad, "TwoDModels", counting)
    return calls


@pytest.mark.slow
def test_segment_a_folder_builds_the_models_once(cli, chairs, tmp_path, model_count):
    before = _listing(chairs)
    result = cli("segment", chairs, "--parts", PARTS, "--preset", "partstad-oracle", "--out", tmp_path / "runs",
                 "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert len(model_count) == 1
    run_dir = Path(out["out"])
    assert run_dir.parent.parent == tmp_path / "runs"
    assert [Path(r["input"]).name for r in out["inputs"]] == sorted(before)
    for record in out["inputs"]:
        stem = Path(record["input"]).stem
        for path in record["outputs"].values():
            assert Path(path).parent == run_dir and Path(path).name.startswith(f"{stem}.") and Path(path).is_file()
        assert sum(record["points_per_part"].values()) == record["points"] == 1024
        assert record["miou"] > 0.5  # oracle boxes on a labelled chair
    assert sum(out["points_per_part"].values()) == 2048 and out["weighting"] == "none"
    assert json.loads((run_dir / "summary.json").read_text()) == out
    assert _listing(chairs) == before


@pytest.mark.slow
def test_segment_a_glob(cli, chairs, tmp_path, model_count):
    first = sorted(chairs.iterdir())[0]
    result = cli("segment", str(chairs / f"{first.stem[:-1]}?.ply"), "--parts", PARTS, "--preset", "partstad-oracle",
                 "--out", tmp_path / "runs", "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert len(model_count) == 1 and first.name in [Path(r["input"]).name for r in out["inputs"]]


def test_segment_missing_input_fails_before_any_model_loads(cli, tmp_path, model_count):
    path = tmp_path / "chair_0001.npy"
    __import__("numpy").save(path, __import__("numpy").zeros((16, 3), "float32"))
    result = cli("segment", path, tmp_path / "nope.ply", "--parts", PARTS, "--preset", "partstad-oracle",
                 "--out", tmp_path / "runs")
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error: ") and "nope.ply" in lines[0]
    assert model_count == [] and not (tmp_path / "runs").exists()
