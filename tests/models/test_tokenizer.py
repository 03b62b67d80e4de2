"""Dual tokenizer on tiny checkpoints in the real layouts: rates, token counts, streaming, golden codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.stepaudio.audio import kaldi_fbank
from models.stepaudio.tokenizer import DualTokenizer, ParaformerConfig, SANMEncoder, apply_lfr, load_cmvn
from tests.models.conftest import PARAFORMER_SUBDIR, test_audio

GOLDEN_SHA = "c20b7483c468e2b5"


def test_paraformer_layout_matches_reference() -> None:
    """``encoder.*`` names/shapes/order of the FunASR paraformer-large online model.pt (make_reference_keys.py)."""
    with torch.device("meta"):
        enc = SANMEncoder(ParaformerConfig())
    ref = json.loads((Path(__file__).parent / "data" / "paraformer_encoder_keys.json").read_text())
    assert [[f"encoder.{k}", list(v.shape)] for k, v in enc.state_dict().items()] == ref


def test_30s_rate(dual_tokenizer: DualTokenizer) -> None:
    toks = dual_tokenizer.tokenize(test_audio(30.0), 16000)
    assert len(toks.linguistic) == 500 and len(toks.semantic) == 750
    rate = toks.interleaved.size / 30.0
    assert rate == pytest.approx(41.67, abs=0.1)
    assert toks.vocab_ids[0] >= 65536 and max(toks.vocab_ids) <= 70655


def test_golden_codes(dual_tokenizer: DualTokenizer) -> None:
    toks = dual_tokenizer.tokenize(test_audio(3.0, seed=1), 16000)
    digest = hashlib.sha256(toks.interleaved.astype(np.int64).tobytes()).hexdigest()[:16]
    assert digest == GOLDEN_SHA


@pytest.mark.parametrize("sr", [8000, 22050, 24000, 44100, 48000])
def test_any_input_rate(dual_tokenizer: DualTokenizer, sr: int) -> None:
    toks = dual_tokenizer.tokenize(test_audio(2.0, sr=sr), sr)
    assert toks.interleaved.size == pytest.approx(2.0 * 41.67, abs=6)


def test_bad_rate(dual_tokenizer: DualTokenizer) -> None:
    with pytest.raises(ValueError, match="not supported"):
        dual_tokenizer.tokenize(np.zeros(1000, np.float32), 11025)


@pytest.mark.parametrize("sr", [16000, 48000, 8000])
def test_streaming(dual_tokenizer: DualTokenizer, sr: int) -> None:
    audio = test_audio(4.0, sr=sr)
    st = dual_tokenizer.stream(sr)
    out: list[int] = []
    first_at = None
    step = sr // 10
    for i in range(0, audio.size, step):
        new = st.feed(audio[i : i + step])
        if new and first_at is None:
            first_at = i + step
        out += new
    assert first_at is not None and first_at / sr < 2.0, "tokens must arrive before the end of the audio"
    out += st.finish()
    assert len(out) % 5 == 0
    assert len(out) == pytest.approx(4.0 * 41.67, abs=6)
    offline = dual_tokenizer.tokenize(audio, sr, normalize=False).interleaved.tolist()
    n = min(len(out), len(offline))
    assert np.mean(np.array(out[:n]) == np.array(offline[:n])) > 0.5


def test_int16_pcm(dual_tokenizer: DualTokenizer) -> None:
    pcm = (test_audio(1.5) * 32767).astype(np.int16)
    st = dual_tokenizer.stream(16000)
    toks = st.feed(pcm) + st.finish()
    assert len(toks) == pytest.approx(1.5 * 41.67, abs=6)


def test_frontend_pieces(tokenizer_dir) -> None:  # noqa: ANN001
    shift, scale = load_cmvn(tokenizer_dir / PARAFORMER_SUBDIR / "am.mvn")
    assert shift.shape == (560,) and scale.shape == (560,)
    fb = kaldi_fbank(test_audio(1.0) * 32768, window_type="hamming")
    assert fb.shape == (98, 80) and torch.isfinite(fb).all()
    lfr = apply_lfr(fb, 7, 6)
    assert lfr.shape == (17, 560)
    assert torch.equal(lfr[0, :80], fb[0]) and torch.equal(lfr[0, 3 * 80 : 4 * 80], fb[0])
    assert torch.equal(lfr[1, :80], fb[3])
