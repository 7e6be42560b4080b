"""Weights from the Hugging Face Hub (`hf://owner/repo[@revision][/file]`); uploads live in `publish`.

Downloads go through huggingface_hub's own cache. HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE are read
when a download happens (not when huggingface_hub was imported), so a changed environment is honoured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pc3d.errors import InputError

HF_SCHEME = "hf://"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
DEFAULT_FILE = "model.safetensors"  # what push_to_hub uploads


@dataclass(frozen=True)
class HubSpec:
    repo_id: str
    revision: str | None
    filename: str | None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        file = f"/{self.filename}" if self.filename else ""
        return f"{HF_SCHEME}{self.repo_id}{rev}{file}"


def parse_hub_spec(spec: str) -> HubSpec:
    """`hf://owner/repo[@revision][/path/in/repo]` -> its parts."""
    rest = spec[len(HF_SCHEME):] if spec.startswith(HF_SCHEME) else spec
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise InputError(f"'{spec}': expected hf://owner/repo[@revision][/file]")
    repo, _, revision = parts[1].partition("@")
    if not repo or (_ and not revision):
        raise InputError(f"'{spec}': expected hf://owner/repo[@revision][/file]")
    filename = "/".join(parts[2:]) or None
    return HubSpec(f"{parts[0]}/{repo}", revision or None, filename)


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_weights(spec: str) -> Path:
    """A local file for a weight argument: the path itself, or the hub file through the local cache."""
    if not spec.startswith(HF_SCHEME):
        path = Path(spec).expanduser()
        if not path.exists():
            raise InputError(f"weights file not found: {spec}")
        if path.is_dir():
            raise InputError(f"weights {spec}: is a folder; name the checkpoint file inside it")
        return path
    return _download(parse_hub_spec(spec), spec)


@contextlib.contextmanager
def hub_errors(spec: str, hub: HubSpec) -> Iterator[None]:
    """Turn huggingface_hub's failures into one actionable line (InputError, exit 2)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub could not be reached"
        raise InputError(f"{spec}: not in the local Hugging Face cache ({hub_cache_dir()}) and {why}") from None
    except GatedRepoError:
        raise InputError(f"{spec}: {hub.repo_id} is gated; accept its terms and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise InputError(f"{spec}: repository {hub.repo_id} not found on the hub (or private: log in)") from None
    except RevisionNotFoundError:
        raise InputError(f"{spec}: revision '{hub.revision}' not found in {hub.repo_id}") from None
    except EntryNotFoundError:
        raise InputError(f"{spec}: file '{hub.filename}' not found in {hub.repo_id}") from None
    except HFValidationError as exc:
        raise InputError(f"{spec}: invalid repository name ({first_line(exc)})") from None
    except OSError as exc:  # HTTP errors and connection failures
        raise InputError(f"{spec}: cannot download from the hub: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _download(hub: HubSpec, spec: str) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    common: dict[str, Any] = {"revision": hub.revision, "cache_dir": hub_cache_dir(), "local_files_only": hub_offline(),
                              "library_name": "pc3d"}
    with hub_errors(spec, hub):
        if hub.filename:
            path = Path(hf_hub_download(hub.repo_id, hub.filename, **common))
            if path.suffix == ".safetensors":
                _fetch_sidecar(hub, common)
            return path
        folder = Path(snapshot_download(hub.repo_id, allow_patterns=[f"*{s}" for s in WEIGHT_SUFFIXES] + ["*.json"],
                                        **common))
        return _pick_weights(folder, spec)


def _fetch_sidecar(hub: HubSpec, common: dict[str, Any]) -> None:
    """pc3d checkpoints carry a JSON sidecar (sha256, config) next to the weights; fetch it when present."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(hub.repo_id, str(Path(hub.filename).with_suffix(".json")), **common)
    except Exception:  # optional companion: plain safetensors repos have none
        return


def _pick_weights(folder: Path, spec: str) -> Path:
    if (folder / DEFAULT_FILE).is_file():
        return folder / DEFAULT_FILE
    found = sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(f"{spec}: the repository has no weight file ({', '.join(WEIGHT_SUFFIXES)})")
    names = ", ".join(str(p.relative_to(folder)) for p in found[:5])
    raise InputError(f"{spec}: several weight files ({names}); name one, e.g. {spec.rstrip('/')}/{found[0].name}")
