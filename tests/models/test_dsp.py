"""models.dsp is torch-free (the CPU images have no torch) and computes what torch computes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from models import dsp


def _torch_whisper_log_mel(x: np.ndarray, n_mels: int) -> np.ndarray:
    """Whisper's own formulation: torch.stft (center, reflect), power, Slaney mel, log10, 8 dB floor."""
    t = torch.from_numpy(x)
    stft = torch.stft(t, 400, 160, window=torch.hann_window(400), return_complex=True)
    mel = torch.from_numpy(dsp.slaney_mel_filterbank(16000, 400, n_mels)) @ (stft[..., :-1].abs() ** 2)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


@pytest.mark.parametrize(("n", "n_mels"), [(16000, 128), (16000 * 8, 80), (4000 + 37, 128)])
def test_whisper_log_mel_matches_torch_stft(n: int, n_mels: int) -> None:
    rng = np.random.default_rng(n)
    t = np.arange(n) / 16000
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(n))
    x = x.astype(np.float32)
    ours = dsp.whisper_log_mel(x, n_mels)
    ref = _torch_whisper_log_mel(x, n_mels)
    assert ours.shape == ref.shape == (n_mels, n // 160)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_whisper_log_mel_refuses_too_short_audio() -> None:
    with pytest.raises(ValueError, match="needs more than 200"):
        dsp.whisper_log_mel(np.zeros(100, np.float32))


def test_dsp_and_smart_turn_import_without_torch() -> None:
    """What the gateway image loads must not need torch (it is not installed there)."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import models.dsp, models.turn.smart_turn, services.gateway.stages\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
