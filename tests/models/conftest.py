"""Fixtures on the tiny random checkpoints of models.stepaudio.tiny (REAL Step-Audio layouts), for tests/models.

Everything is seeded and small so the whole directory runs in well under a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.stepaudio.tiny import (  # noqa: E402,F401  (builders re-exported for the tests)
    PARAFORMER_SUBDIR,
    TINY_PARAFORMER,
    make_campplus_onnx,
    make_cosy_dir,
    make_flow,
    make_hift,
    make_paraformer_dir,
    make_semantic_onnx,
    make_step1,
    make_tokenizer_dir,
    speech_like,
    tiny_flow_config,
    tiny_hift_config,
    tiny_step1_config,
)


def test_audio(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like test signal (harmonics with a moving pitch plus noise)."""
    return speech_like(seconds, sr, seed)


test_audio.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-wide tiny tokenizer directory."""
    return make_tokenizer_dir(tmp_path_factory.mktemp("Step-Audio-Tokenizer"))


@pytest.fixture(scope="session")
def dual_tokenizer(tokenizer_dir: Path):  # noqa: ANN201
    """DualTokenizer loaded through the real loader."""
    from models.stepaudio.tokenizer import DualTokenizer

    return DualTokenizer.load(tokenizer_dir)


@pytest.fixture(scope="session")
def cosy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny CosyVoice-300M-25Hz directory (flow.pt, hift.pt, campplus.onnx)."""
    d = tmp_path_factory.mktemp("Step-Audio-TTS-3B") / "CosyVoice-300M-25Hz"
    make_flow(d / "flow.pt")
    make_hift(d / "hift.pt")
    make_campplus_onnx(d / "campplus.onnx")
    (d / "cosyvoice.yaml").write_text("# tiny test config\n", encoding="utf-8")
    return d
