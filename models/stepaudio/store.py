"""Model store: manifest of Step-Audio artifacts, verification, explicit download.

Nothing here downloads at import or in :func:`verify`; only :func:`fetch` (called explicitly, e.g. by
``stepaudio models fetch``) uses ``huggingface_hub.snapshot_download``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "manifest.yaml"
SERVICES = ("tokenizer", "llm", "tts", "vocoder")


def load_manifest(path: str | Path = MANIFEST_PATH) -> dict[str, Any]:
    """Parse ``models/manifest.yaml``."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _file_services(repo: dict[str, Any], f: dict[str, Any]) -> list[str]:
    return list(f.get("services") or repo.get("services") or [])


def required_files(
    service: str | None = None, manifest: dict[str, Any] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(local_dir, file entry) pairs needed by ``service`` (all services when None)."""
    if service is not None and service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    m = manifest or load_manifest()
    out = []
    for repo in m["repos"]:
        for f in repo["files"]:
            if service is None or service in _file_services(repo, f):
                out.append((repo["local_dir"], f))
    return out


def verify(models_dir: str | Path, service: str | None = None, check_sizes: bool = False) -> list[str]:
    """Return a list of problems (empty when everything ``service`` needs is present).

    Each missing file is named with its path; index files also have their listed shards checked. With
    ``check_sizes`` a file much smaller than the manifest size (< 50 %) is reported as truncated.
    """
    root = Path(models_dir)
    problems: list[str] = []
    if not root.is_dir():
        return [f"models directory {root} does not exist"]
    for local_dir, f in required_files(service):
        path = root / local_dir / f["path"]
        alt = f.get("alternative")
        if not path.is_file() and alt and (root / local_dir / alt).is_file():
            path = root / local_dir / alt
            f = {**f, "index": alt.endswith(".index.json"), "size_bytes": None}
        if not path.is_file():
            if not f.get("optional"):
                problems.append(f"missing {path}" + (f" (or {root / local_dir / alt})" if alt else ""))
            continue
        size = f.get("size_bytes")
        if check_sizes and size and path.stat().st_size < 0.5 * size:
            problems.append(f"{path} looks truncated: {path.stat().st_size} bytes, expected about {size}")
        if f.get("index") or path.name.endswith(".index.json"):
            try:
                weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError) as exc:
                problems.append(f"{path} is not a valid safetensors index: {exc}")
                continue
            for shard in sorted(set(weight_map.values())):
                if not (path.parent / shard).is_file():
                    problems.append(f"missing shard {path.parent / shard} (listed in {path.name})")
    return problems


def fetch(dest: str | Path, service: str | None = None, token: str | None = None) -> list[Path]:
    """Download the repos ``service`` needs (all when None) into ``dest/<local_dir>``; returns the dirs."""
    from huggingface_hub import snapshot_download

    m = load_manifest()
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for repo in m["repos"]:
        if service is not None and not any(service in _file_services(repo, f) for f in repo["files"]):
            continue
        target = root / repo["local_dir"]
        snapshot_download(repo_id=repo["repo_id"], local_dir=str(target), token=token)
        out.append(target)
    return out
