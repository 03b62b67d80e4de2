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

GOLDEN_SHA = "7410631e8006943e"


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


def test_final_pass_is_the_whole_utterance_normalised(dual_tokenizer: DualTokenizer) -> None:
    """Streamed tokens are provisional; the final pass equals the offline tokens of the peak-normalised whole
    utterance (semantic tokens of the whole utterance, not of 1.2 s blocks)."""
    audio = 0.2 * test_audio(3.0)
    st = dual_tokenizer.stream(16000)
    for i in range(0, audio.size, 1600):
        st.feed(audio[i : i + 1600])
    st.finish()
    final = st.final_tokens()
    assert final == dual_tokenizer.tokenize(audio, 16000, normalize=True).interleaved.tolist()
    assert len(final) % 5 == 0 and len(final) == pytest.approx(3.0 * 41.67, abs=6)


def test_peak_normalisation_floor() -> None:
    from models.stepaudio.audio import peak_normalize

    loud = np.array([0.5, -0.25], np.float32)
    assert np.allclose(peak_normalize(loud), [0.999, -0.4995])
    quiet = np.array([0.001, -0.002], np.float32)  # below the 0.01 floor: scaled by 0.999 / 0.01 only
    assert np.allclose(peak_normalize(quiet), quiet * 99.9)


def test_linguistic_streamed_equals_offline_in_any_pieces(dual_tokenizer: DualTokenizer) -> None:
    """The reference's streaming encoder semantics: the same ids whether the utterance comes whole or in pieces of
    any size (steps of 3840 samples inside, the tail flushed at finish)."""
    ling = dual_tokenizer.linguistic
    audio = test_audio(4.3, seed=3)
    offline = ling.tokenize(audio).tolist()
    assert len(offline) == pytest.approx(4.3 * 16.67, abs=2)
    for piece in (320, 1000, 3840, 7777):
        st = ling.stream()
        got: list[int] = []
        for i in range(0, audio.size, piece):
            got += st.push(audio[i : i + piece])
        got += st.finish()
        assert got == offline, piece
    # ... and not the full-context encoding (the model sees at most 20 frames back and no look-ahead)
    assert offline != ling.tokenize_full_context(audio).tolist()


@pytest.mark.parametrize("seconds", [1.0, 1.7, 2.4, 3.3, 5.0])
def test_online_front_end_matches_the_offline_features(dual_tokenizer: DualTokenizer, seconds: float) -> None:
    """Fbank over the cached tail + each step, LFR with the splice cache: the offline features frame for frame,
    except the reference's tail case (a last step of 400..879 samples loses its last frame: 1.0 s)."""
    from models.stepaudio.tokenizer import STEP_SAMPLES, LinguisticStream

    ling = dual_tokenizer.linguistic
    audio = test_audio(seconds, seed=4)
    st = LinguisticStream(ling)
    steps = [audio[i : i + STEP_SAMPLES] for i in range(0, audio.size, STEP_SAMPLES)]
    feats = [st._frontend(c, final=i == len(steps) - 1) for i, c in enumerate(steps)]
    online = torch.cat(feats)
    offline = ling.features(audio)
    if 400 <= audio.size % STEP_SAMPLES < 880:
        offline = offline[:-1]
    assert online.shape == offline.shape
    assert torch.allclose(online, offline, atol=1e-4)
    assert [f.shape[0] for f in feats[:-1]] == [4] * (len(steps) - 1)  # 4 LFR frames per 3840-sample step


def test_first_step_is_the_encoder_over_zero_overlap_plus_the_new_frames(dual_tokenizer: DualTokenizer) -> None:
    """Cross-check of the chunked encoder with the plain module: the first step's window is 5 zero frames (no
    positions) + the new frames, full attention inside the window, after_norm, the newest frames kept."""
    from models.stepaudio.tokenizer import sinusoidal_positions

    ling = dual_tokenizer.linguistic
    audio = test_audio(0.24, seed=5)[:3800]  # one (final) step
    feats = ling.features(audio)
    n = feats.shape[0]
    enc = ling.encoder
    with torch.inference_mode():
        x = feats[None] * enc.cfg.output_size**0.5 + sinusoidal_positions(n, feats.shape[1])
        h = torch.cat([torch.zeros(1, 5, feats.shape[1]), x], dim=1)
        for layer in [*enc.encoders0, *enc.encoders]:
            h = layer(h)
        expected = ling.quantize(enc.after_norm(h)[0, -n:]).tolist()
    assert ling.tokenize(audio).tolist() == expected
