"""Publishing a run to the Hugging Face Hub: the final weights, config.yaml and a model card.

Kept apart from `hub` (downloads and `hf://` resolution) because it reads checkpoints, while
`checkpoint` resolves `hf://` weights through `hub`: one direction each, no import circle.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pc3d.engine.checkpoint import CheckpointFolder, export_model, read_checkpoint
from pc3d.engine.hub import DEFAULT_FILE, HF_SCHEME, hub_offline, parse_hub_spec
from pc3d.errors import InputError, RuntimeFailure


def model_card(meta: dict[str, Any], repo_id: str) -> str:
    """README.md for the hub: metadata header, metrics table, the resolved config."""
    from pc3d import __version__

    config = meta.get("config", {})
    method = config.get("method", "unknown")
    header = {"library_name": "pc3d", "tags": ["pc3d", "point-cloud", "3d", str(method)]}
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# {config.get('run', {}).get('name') or method}", "",
             f"Trained with pc3d {__version__}: `{config.get('command', '?')}` of method `{method}`, "
             f"{meta.get('epoch', '?')} epochs, {meta.get('step', '?')} optimiser steps.", "",
             "## Metrics", ""]
    metrics = meta.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
                  for k, v in metrics.items()]
    else:
        lines.append("No metrics were recorded.")
    lines += ["", "## Use", "", "```bash", f"pc3d finetune TASK --from hf://{repo_id}", "```", "",
              "## Config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def push_to_hub(run_dir: str | Path, repo_id: str, api: Any = None, private: bool = False) -> dict[str, str]:
    """Upload a run's final weights (model.safetensors + model.json), config.yaml and a model card."""
    if parse_hub_spec(repo_id).filename or "@" in repo_id:
        raise InputError(f"--push-to-hub {repo_id}: expected owner/repo")
    if hub_offline():
        raise InputError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set")
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints"
    source = folder / "last.json" if (folder / "last.json").is_file() else CheckpointFolder(folder, 1).latest()
    if source is None:
        raise InputError(f"--push-to-hub: run {run_dir} has no checkpoint to upload")
    checkpoint = read_checkpoint(source)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="pc3d-push-") as tmp:
        staging = Path(tmp)
        export_model(checkpoint, staging / Path(DEFAULT_FILE).stem)
        (staging / "README.md").write_text(model_card(checkpoint.meta, repo_id))
        if (run_dir / "config.yaml").is_file():
            shutil.copy(run_dir / "config.yaml", staging / "config.yaml")
        try:
            api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=str(staging),
                                       commit_message=f"pc3d: {run_dir.parent.name} step {checkpoint.meta.get('step')}")
        except OSError as exc:  # HTTP and connection errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeFailure(f"--push-to-hub {repo_id}: upload failed: {first}") from None
    return {"repo": repo_id, "weights": f"{HF_SCHEME}{repo_id}/{DEFAULT_FILE}",
            "commit": str(getattr(commit, "commit_url", commit))}
