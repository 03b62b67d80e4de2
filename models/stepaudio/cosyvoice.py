"""CosyVoice-300M-25Hz directories (flow.pt, hift.pt): where they are, what is missing, how to load them.

``model_dir`` may be any of:

* the CosyVoice dir itself (``.../Step-Audio-TTS-3B/CosyVoice-300M-25Hz``; the music weights are then read
  from the sibling ``CosyVoice-300M-25Hz-Music``),
* the ``Step-Audio-TTS-3B`` dir,
* the models root (``stepaudio models fetch`` layout, holding ``Step-Audio-TTS-3B/``).

Published checkpoints use the published hyper-parameters. A dir may carry an optional ``model_config.json``
(``{"flow": {FlowConfig fields}, "hift": {HiFTConfig fields}}``) for non-published sizes such as the tiny test
checkpoints; the released repos have none. Shared by the TTS and vocoder services.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TTS_DIR = "Step-Audio-TTS-3B"
COSY_DIR = "CosyVoice-300M-25Hz"
MUSIC_SUFFIX = "-Music"


def resolve_device(name: str) -> str:
    """``auto`` -> cuda when available, else cpu; ``cpu``/``cuda``/``cuda:N`` as given."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but torch sees no CUDA device: use device=cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")
    return name


def cosy_dirs(model_dir: str | Path) -> tuple[Path, Path]:
    """(common, music) CosyVoice dirs for a CosyVoice dir, a Step-Audio-TTS-3B dir or a models root."""
    d = Path(model_dir)
    if d.name.startswith("CosyVoice") or (d / "hift.pt").is_file():
        common = Path(str(d)[: -len(MUSIC_SUFFIX)]) if d.name.endswith(MUSIC_SUFFIX) else d
    elif (d / COSY_DIR).is_dir() or d.name == TTS_DIR:
        common = d / COSY_DIR
    else:
        common = d / TTS_DIR / COSY_DIR
    return common, common.parent / (common.name + MUSIC_SUFFIX)


def missing_files(paths: list[Path]) -> list[str]:
    """``missing <path>`` for each path that is not a file."""
    return [f"missing {p}" for p in paths if not p.is_file()]


def fail_if_missing(problems: list[str], what: str, env: str, root: Path | None = None) -> None:
    """Raise FileNotFoundError listing every problem and how to fix it."""
    if not problems:
        return
    hint = f"; check with `stepaudio models verify {root}`" if root is not None else ""
    raise FileNotFoundError(
        f"{what}: {len(problems)} model file(s) missing under {env}:\n  " + "\n  ".join(problems)
        + f"\nfetch them with `stepaudio models fetch <models dir>` and point {env} at it{hint}"
    )


def model_config(cosy_dir: Path) -> dict[str, Any]:
    """Optional ``model_config.json`` overrides (empty for the published checkpoints)."""
    p = cosy_dir / "model_config.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def load_hift_dir(cosy_dir: Path, device: str) -> Any:
    """HiFT from ``cosy_dir/hift.pt`` (published config unless ``model_config.json`` says otherwise)."""
    from models.stepaudio.hift import HiFTConfig, load_hift

    over = model_config(cosy_dir).get("hift")
    return load_hift(cosy_dir / "hift.pt", device, cfg=HiFTConfig(**over) if over else None)


def load_flow_dir(cosy_dir: Path, device: str) -> Any:
    """Flow from ``cosy_dir/flow.pt`` (published config unless ``model_config.json`` says otherwise)."""
    from models.stepaudio.flow import FlowConfig, load_flow

    over = model_config(cosy_dir).get("flow")
    if over:
        over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
    return load_flow(cosy_dir / "flow.pt", device, cfg=FlowConfig(**over) if over else None)
