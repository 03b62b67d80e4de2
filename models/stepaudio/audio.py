"""Audio front ends shared by the Step-Audio components (numpy/torch only; no torchaudio/librosa/whisper). The
torch-free parts live in :mod:`models.dsp` (the CPU images have no torch) and are re-exported here.

* :func:`resample` - soxr resampling to 16 kHz/22.05 kHz from 8/16/22.05/24/44.1/48 kHz.
* :func:`whisper_log_mel` - Whisper-style 128-bin log-mel (n_fft 400, hop 160) for ``speech_tokenizer_v1.onnx``.
* :func:`kaldi_fbank` - Kaldi-compatible log mel filterbank (Paraformer front end, CAM++).
* :func:`cosyvoice_mel` - 80-bin log mel at 22.05 kHz (n_fft 1024, hop 256, fmax 8000) for flow prompts.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from models import dsp
from models.dsp import SUPPORTED_RATES, peak_normalize, resample, slaney_mel_filterbank

__all__ = ["SUPPORTED_RATES", "cosyvoice_mel", "kaldi_fbank", "peak_normalize", "resample", "slaney_mel_filterbank",
           "whisper_log_mel"]

def whisper_log_mel(audio16k: np.ndarray | torch.Tensor, n_mels: int = 128) -> torch.Tensor:
    """Whisper ``log_mel_spectrogram`` as a tensor: (n_mels, frames) with frames = len // 160 (:mod:`models.dsp`)."""
    return torch.from_numpy(dsp.whisper_log_mel(np.asarray(audio16k, dtype=np.float32), n_mels))


def cosyvoice_mel(audio22k: np.ndarray | torch.Tensor) -> torch.Tensor:
    """CosyVoice/Matcha mel: (80, frames) log-compressed magnitude mel at 22.05 kHz, hop 256, fmax 8000."""
    n_fft, hop, win = 1024, 256, 1024
    x = torch.as_tensor(np.asarray(audio22k, dtype=np.float32)).reshape(1, 1, -1)
    pad = (n_fft - hop) // 2
    x = torch.nn.functional.pad(x, (pad, pad), mode="reflect").reshape(-1)
    spec = torch.stft(x, n_fft, hop, win, window=torch.hann_window(win), center=False, return_complex=True)
    mag = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    basis = torch.from_numpy(slaney_mel_filterbank(22050, n_fft, 80, 0.0, 8000.0))
    return torch.log(torch.clamp(basis @ mag, min=1e-5))


def _kaldi_mel_banks(n_mels: int, n_fft: int, sr: float, low: float, high: float) -> torch.Tensor:
    def mel(f: torch.Tensor | float) -> torch.Tensor:
        return 1127.0 * torch.log(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)

    nyquist = sr / 2
    high = high if high > 0 else nyquist + high
    n_bins = n_fft // 2
    fft_bin_width = sr / n_fft
    mel_low, mel_high = mel(low), mel(high)
    delta = (mel_high - mel_low) / (n_mels + 1)
    b = torch.arange(n_mels, dtype=torch.float64)[:, None]
    left = mel_low + b * delta
    center = mel_low + (b + 1) * delta
    right = mel_low + (b + 2) * delta
    m = mel(fft_bin_width * torch.arange(n_bins, dtype=torch.float64))[None, :]
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1)).float()  # (n_mels, n_fft//2+1), last bin zero like kaldi


def kaldi_fbank(
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int = 16000,
    num_mel_bins: int = 80,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window_type: str = "povey",
    dither: float = 0.0,
    energy_floor: float = 1.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kaldi ``compute-fbank-feats`` equivalent (snip_edges, remove DC, power spectrum, log): (frames, bins)."""
    x = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).reshape(-1).double()
    wlen = int(sample_rate * frame_length_ms / 1000)
    shift = int(sample_rate * frame_shift_ms / 1000)
    n_fft = 1 << (wlen - 1).bit_length()
    if x.numel() < wlen:
        return torch.zeros(0, num_mel_bins)
    n_frames = 1 + (x.numel() - wlen) // shift
    frames = x.as_strided((n_frames, wlen), (shift, 1)).clone()
    if dither > 0:
        frames = frames + dither * torch.randn(frames.shape, generator=generator, dtype=frames.dtype)
    frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis:
        prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = frames - preemphasis * prev
    n = torch.arange(wlen, dtype=torch.float64)
    if window_type == "povey":
        win = (0.5 - 0.5 * torch.cos(2 * math.pi * n / (wlen - 1))) ** 0.85
    elif window_type == "hamming":
        win = 0.54 - 0.46 * torch.cos(2 * math.pi * n / (wlen - 1))
    elif window_type == "hanning":
        win = 0.5 - 0.5 * torch.cos(2 * math.pi * n / (wlen - 1))
    else:
        raise ValueError(f"unsupported window {window_type!r}")
    frames = frames * win
    spec = torch.fft.rfft(frames, n=n_fft).abs() ** 2
    banks = _kaldi_mel_banks(num_mel_bins, n_fft, sample_rate, low_freq, high_freq).double()
    mel = spec @ banks.T
    # energy_floor only affects the (unused) energy column in Kaldi; the log floor is float epsilon.
    del energy_floor
    return torch.log(torch.clamp(mel, min=torch.finfo(torch.float32).eps)).float()
