"""Smart Turn v3.2 (the ONNX file from the pipecat-ai wheel) through models.turn.smart_turn, on real speech."""

from __future__ import annotations

import numpy as np
import pytest
from live_audio import piper_speech, silence

from models.turn.smart_turn import SmartTurn, features


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn()


def test_features_are_the_last_8_s_left_padded() -> None:
    short = features(np.ones(16000, np.float32) * 0.1)
    assert short.shape == (80, 800)
    long = np.random.default_rng(0).standard_normal(16000 * 10).astype(np.float32)
    assert np.allclose(features(long), features(long[-16000 * 8:]), atol=1e-5)


def test_complete_and_unfinished_utterances(model: SmartTurn) -> None:
    """Margins measured on these Piper renderings: 0.97 vs 0.05 (threshold 0.5)."""
    done = model.probability(np.concatenate([piper_speech("What is the capital of France?"), silence(200)]))
    cut = model.probability(np.concatenate([piper_speech("So I was thinking that maybe we could"), silence(200)]))
    assert done > 0.8 and cut < 0.2, (done, cut)
    # any input rate: the model resamples to 16 kHz
    from services.kit.audio import resample

    audio = np.concatenate([piper_speech("What is the capital of France?"), silence(200)])
    assert abs(model.probability(resample(audio, 16000, 48000), 48000) - done) < 0.1
