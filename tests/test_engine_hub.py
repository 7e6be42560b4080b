"""hf:// weights through the real huggingface_hub code against a cache built here; uploads with a fake API."""

from __future__ import annotations

import shutil
from pathlib import Path

import engine_toy
import pytest
import torch
import yaml

from pc3d.engine.checkpoint import load_weights, read_checkpoint
from pc3d.engine.hub import parse_hub_spec, resolve_weights
from pc3d.engine.publish import push_to_hub
from pc3d.engine.trainer import fit
from pc3d.errors import InputError
from pc3d.runs import RunRequest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("hubrun")
    return fit(RunRequest(config=engine_toy.preset(out, "hubtoy", train={"epochs": 1}), preset_name="toy"),
               engine_toy.build)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, trained) -> Path:
    """owner/toy in huggingface_hub's cache layout (refs/main -> snapshots/<commit>/files), offline."""
    home = tmp_path / "hf"
    snapshot = home / "hub" / "models--owner--toy" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (home / "hub" / "models--owner--toy" / "refs").mkdir()
    (home / "hub" / "models--owner--toy" / "refs" / "main").write_text(COMMIT)
    last = Path(trained["checkpoints"]["last"])
    shutil.copy(last.with_suffix(".safetensors"), snapshot / "model.safetensors")
    shutil.copy(last, snapshot / "model.json")
    torch.save({"model": {"w": torch.ones(2)}}, snapshot / "official.pth")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_parse_hub_spec():
    spec = parse_hub_spec("hf://owner/repo@v1.0/sub/model.safetensors")
    assert (spec.repo_id, spec.revision, spec.filename) == ("owner/repo", "v1.0", "sub/model.safetensors")
    assert parse_hub_spec("hf://owner/repo").filename is None
    with pytest.raises(InputError):
        parse_hub_spec("hf://owner")


def test_offline_download_from_the_prepared_cache(hub_cache, trained):
    expected = read_checkpoint(trained["checkpoints"]["last"]).model_state
    for spec in ("hf://owner/toy", "hf://owner/toy/model.safetensors", "hf://owner/toy@main/model.safetensors"):
        assert resolve_weights(spec).resolve() == (hub_cache / "model.safetensors").resolve()
        weights = load_weights(spec)
        assert sorted(weights) == sorted(expected)
        assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert torch.equal(load_weights("hf://owner/toy/official.pth")["w"], torch.ones(2))


def test_missing_file_or_repo_fails_in_one_line(hub_cache):
    for spec in ("hf://owner/toy/absent.safetensors", "hf://owner/other", "hf://owner/toy@v9/model.safetensors"):
        with pytest.raises(InputError) as exc:
            resolve_weights(spec)
        message = str(exc.value)
        assert "\n" not in message and spec in message and "HF_HUB_OFFLINE" in message


class FakeApi:
    """Records what push_to_hub uploads (there is no network here)."""

    def __init__(self, keep: Path) -> None:
        self.keep = keep
        self.created: list[str] = []

    def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = False) -> None:
        self.created.append(repo_id)

    def upload_folder(self, repo_id: str, folder_path: str, commit_message: str) -> object:
        shutil.copytree(folder_path, self.keep)
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def test_push_to_hub_uploads_weights_and_card(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    api = FakeApi(tmp_path / "uploaded")
    result = push_to_hub(trained["run_dir"], "owner/toy", api=api)
    assert api.created == ["owner/toy"] and result["weights"] == "hf://owner/toy/model.safetensors"
    uploaded = tmp_path / "uploaded"
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.yaml", "model.json",
                                                          "model.safetensors"]
    exported = read_checkpoint(uploaded / "model.safetensors")
    assert not any(k.startswith("optim/") for k in exported.tensors)  # weights only
    final = read_checkpoint(trained["checkpoints"]["last"]).model_state
    assert all(torch.equal(exported.model_state[k], v) for k, v in final.items())
    card = (uploaded / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "pc3d" and "engine-toy" in header["tags"]
    assert f"{trained['metrics']['val/mse']:.6g}" in card and "method: engine-toy" in card
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="HF_HUB_OFFLINE"):
        push_to_hub(trained["run_dir"], "owner/toy", api=api)
