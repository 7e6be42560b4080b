"""Pretrained 2D foundation models (transformers classes) from a local folder or `hf://owner/repo[@revision]`.

Shared by every model under pc3d.foundation (CLIP, open-vocabulary detectors, SAM). Hub specs resolve to a
local snapshot through huggingface_hub's `snapshot_download` with the same cache and offline rules as
`pc3d.engine.hub` (HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE read at call time). `save_to_hub_cache` writes a
model (+ processor) into that cache in huggingface_hub's own layout, so tests and the `tiny-random` presets
exercise the real loading code offline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from pc3d.engine.hub import HF_SCHEME, HubSpec, first_line, hub_cache_dir, hub_errors, hub_offline, parse_hub_spec
from pc3d.errors import InputError

T = TypeVar("T")

# What a transformers model / processor folder needs; weights in other formats are never fetched.
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


def resolve_snapshot(spec: str) -> Path:
    """A local folder for `spec`: the folder itself, or the hub snapshot (optionally a sub-folder of it)."""
    if not spec.startswith(HF_SCHEME):
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise InputError(f"pretrained model folder not found: {spec}")
        return folder
    hub = parse_hub_spec(spec)
    folder = _snapshot(hub, spec)
    if hub.filename:  # hf://owner/repo/sub names a sub-folder of the repository
        folder = folder / hub.filename
        if not folder.is_dir():
            raise InputError(f"{spec}: folder '{hub.filename}' not found in {hub.repo_id}")
    return folder


def _snapshot(hub: HubSpec, spec: str) -> Path:
    from huggingface_hub import snapshot_download

    with hub_errors(spec, hub):
        return Path(snapshot_download(hub.repo_id, revision=hub.revision, cache_dir=hub_cache_dir(),
                                      local_files_only=hub_offline(), allow_patterns=SNAPSHOT_PATTERNS,
                                      library_name="pc3d"))


def load_pretrained(model_cls: type[T], spec: str, *, device: Any = "cpu", dtype: Any = None) -> T:
    """`model_cls.from_pretrained` on the resolved snapshot, moved to `device`, in eval mode."""
    folder = resolve_snapshot(spec)
    kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    try:
        model = model_cls.from_pretrained(str(folder), **kwargs)  # type: ignore[attr-defined]
    except (OSError, ValueError, KeyError) as exc:  # missing config/weights, wrong model type
        raise InputError(f"{spec}: cannot load {model_cls.__name__}: {first_line(exc)}") from None
    return model.to(device).eval()


def load_processor(processor_cls: type[T], spec: str) -> T:
    """`processor_cls.from_pretrained` (processor, tokenizer or image processor) on the resolved snapshot."""
    folder = resolve_snapshot(spec)
    try:
        return processor_cls.from_pretrained(str(folder))  # type: ignore[attr-defined]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{spec}: cannot load {processor_cls.__name__}: {first_line(exc)}") from None


def save_to_hub_cache(model: Any, processor: Any | None, repo_id: str, cache_dir: str | os.PathLike,
                      revision: str = "main") -> Path:
    """Write `model` (+ `processor`) as `repo_id` into a huggingface_hub cache folder; returns the snapshot.

    Layout: `cache_dir/models--owner--repo/snapshots/<commit>/<files>` and `refs/<revision>` holding the commit,
    which is what huggingface_hub resolves offline. The commit is a hash of the files, so saving the same model
    twice yields the same snapshot. Files are plain copies (huggingface_hub's no-symlink layout).
    """
    if parse_hub_spec(repo_id).filename or "@" in repo_id:
        raise InputError(f"{repo_id}: expected owner/repo")
    repo_folder = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    repo_folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pc3d-snapshot-", dir=repo_folder) as tmp:
        staging = Path(tmp) / "files"
        model.save_pretrained(str(staging), safe_serialization=True)
        if processor is not None:
            processor.save_pretrained(str(staging))
        commit = _content_hash(staging)
        snapshot = repo_folder / "snapshots" / commit
        if snapshot.exists():
            shutil.rmtree(snapshot)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, snapshot)  # same file system: the snapshot appears complete or not at all
    refs = repo_folder / "refs" / revision
    refs.parent.mkdir(parents=True, exist_ok=True)
    from pc3d.io.atomic import write_text_atomic

    write_text_atomic(refs, commit)
    return snapshot


def _content_hash(folder: Path) -> str:
    """A 40-hex 'commit' id from the relative paths and bytes of every file."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
