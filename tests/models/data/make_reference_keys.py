"""Regenerate the reference state-dict key/shape lists for the published CosyVoice-300M-25Hz flow.pt / hift.pt.

Modules are built at full size on the meta device (no memory). Cross-check: the parameter totals give the
published file sizes in fp32 (flow.pt ~422 MB, hift.pt ~82 MB).
Run: .venv/bin/python tests/models/data/make_reference_keys.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.stepaudio.flow import FlowConfig, MaskedDiffWithXvec
from models.stepaudio.hift import HiFTConfig, HiFTGenerator


def keys_and_shapes(module: torch.nn.Module) -> list[list]:
    """[[name, [shape...]], ...] in state_dict order."""
    return [[k, list(v.shape)] for k, v in module.state_dict().items()]


def main() -> None:
    """Write flow_state_keys.json and hift_state_keys.json next to this file."""
    here = Path(__file__).resolve().parent
    with torch.device("meta"):
        flow = MaskedDiffWithXvec(FlowConfig())
        hift = HiFTGenerator(HiFTConfig())
    (here / "flow_state_keys.json").write_text(json.dumps(keys_and_shapes(flow)), encoding="utf-8")
    (here / "hift_state_keys.json").write_text(json.dumps(keys_and_shapes(hift)), encoding="utf-8")


if __name__ == "__main__":
    main()
