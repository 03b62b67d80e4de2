"""Streaming token-to-wave vs offline synthesis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.stepaudio.flow import load_flow
from models.stepaudio.hift import load_hift
from models.stepaudio.token2wav import FlowPrompt, Token2Wav
from tests.models.conftest import tiny_flow_config, tiny_hift_config


@pytest.fixture(scope="module")
def engine(cosy_dir: Path) -> Token2Wav:
    return Token2Wav(
        load_flow(cosy_dir / "flow.pt", cfg=tiny_flow_config()), load_hift(cosy_dir / "hift.pt", cfg=tiny_hift_config())
    )


def _prompt() -> FlowPrompt:
    rng = np.random.default_rng(0)
    return FlowPrompt(
        rng.integers(0, 5120, 10), rng.standard_normal((52, 80)).astype(np.float32), rng.standard_normal(192)
    )


def test_stream_matches_offline_away_from_seams(engine: Token2Wav) -> None:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 5120, 160).tolist()
    prompt = _prompt()
    offline = engine.offline_mel(tokens, prompt, max_tokens=400)
    st = engine.stream(prompt, chunk_tokens=50, overlap_tokens=10, max_tokens=400)
    chunks: list[np.ndarray] = []
    first_audio_after = None
    for i in range(0, len(tokens), 5):
        new = st.push(tokens[i : i + 5])
        if new and first_audio_after is None:
            first_audio_after = i + 5
        chunks += new
    assert first_audio_after == 60, "first audio after the first chunk (+ overlap look-ahead)"
    chunks += st.finish()
    mel = st.mel_so_far
    assert mel.shape == offline.shape
    f = engine.flow.cfg.mel_frames
    seams = [f(50), f(100), f(150)]
    keep = np.ones(mel.shape[1], bool)
    for s in seams:
        keep[max(0, s - f(10)) : s + f(10)] = False
    err = np.abs(mel[:, keep] - offline[:, keep]).mean()
    assert err < 0.1 * np.abs(offline).mean()
    wav = np.concatenate(chunks)
    assert wav.size == mel.shape[1] * 256 and np.isfinite(wav).all()
    off_wav = engine.vocode(offline)
    assert off_wav.size == wav.size


def test_short_utterance_only_finish(engine: Token2Wav) -> None:
    st = engine.stream(_prompt())
    assert st.push(list(range(1000, 1020))) == []
    out = st.finish()
    assert sum(c.size for c in out) == engine.flow.cfg.mel_frames(20) * 256
