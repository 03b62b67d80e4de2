"""HiFT vocoder (CosyVoice v1 ``HiFTGenerator``): neural source filter + iSTFT HiFi-GAN, 80-bin mel -> 22,050 Hz.

Upsample rates [8, 8] (kernels 16), iSTFT n_fft 16 hop 4 (8*8*4 = 256 = mel hop), 8 harmonics, ConvRNN F0
predictor. Parameter names equal the published ``hift.pt`` (weight-normed convs store ``weight_g``/``weight_v``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import Conv1d, ConvTranspose1d


def weight_norm(module: nn.Module) -> nn.Module:
    """Old-style weight norm (``weight_g`` / ``weight_v`` parameters, as in the published checkpoint)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nn.utils.weight_norm(module)


@dataclass
class HiFTConfig:
    """CosyVoice-300M HiFT hyper-parameters."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: list[int] = field(default_factory=lambda: [8, 8])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16])
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5]] * 3)
    source_resblock_kernel_sizes: list[int] = field(default_factory=lambda: [7, 11])
    source_resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5]] * 2)
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512

    @property
    def hop(self) -> int:
        """Samples per mel frame."""
        return int(np.prod(self.upsample_rates)) * self.hop_len


class Snake(nn.Module):
    """Snake activation x + 1/alpha * sin^2(alpha x) with per-channel ``alpha``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply along channels of (B, C, T)."""
        a = self.alpha[None, :, None]
        return x + (1.0 / (a + 1e-9)) * torch.sin(x * a) ** 2


def _pad(k: int, d: int) -> int:
    return (k * d - d) // 2


class ResBlock(nn.Module):
    """HiFi-GAN residual block with Snake activations."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            [
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=_pad(kernel_size, d)))
                for d in dilations
            ]
        )
        self.convs2 = nn.ModuleList(
            [
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1, padding=_pad(kernel_size, 1)))
                for _ in dilations
            ]
        )
        self.activations1 = nn.ModuleList([Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([Snake(channels) for _ in dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual stack."""
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2, strict=True):
            x = x + c2(a2(c1(a1(x))))
        return x


class SineGen(nn.Module):
    """Harmonic sine source from an upsampled F0 track (no parameters)."""

    def __init__(self, sr: int, harmonics: int, sine_amp: float, noise_std: float, voiced_threshold: float) -> None:
        super().__init__()
        self.sr = sr
        self.harmonics = harmonics
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 (B, 1, N) Hz -> sines (B, H+1, N), uv (B, 1, N)."""
        mult = torch.arange(1, self.harmonics + 2, device=f0.device, dtype=torch.float32)[None, :, None]
        fmat = f0.float() * mult / self.sr
        theta = 2 * np.pi * (torch.cumsum(fmat, dim=-1) % 1)
        phase = (torch.rand(f0.shape[0], self.harmonics + 1, 1, generator=generator) * 2 - 1) * np.pi
        phase[:, 0] = 0
        sines = self.sine_amp * torch.sin(theta + phase.to(f0.device))
        uv = (f0 > self.voiced_threshold).float()
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        noise = noise_amp * torch.randn(sines.shape, generator=generator).to(f0.device)
        return sines * uv + noise, uv


class SourceModuleHnNSF(nn.Module):
    """Merge harmonics to one excitation channel (``m_source.l_linear``)."""

    def __init__(self, cfg: HiFTConfig) -> None:
        super().__init__()
        self.l_sin_gen = SineGen(
            cfg.sampling_rate, cfg.nb_harmonics, cfg.nsf_alpha, cfg.nsf_sigma, cfg.nsf_voiced_threshold
        )
        self.l_linear = nn.Linear(cfg.nb_harmonics + 1, 1)

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """f0 (B, 1, N) -> source (B, 1, N)."""
        sines, _ = self.l_sin_gen(f0, generator)
        w = self.l_linear.weight
        return torch.tanh(self.l_linear(sines.transpose(1, 2).to(w.dtype))).transpose(1, 2)


class ConvRNNF0Predictor(nn.Module):
    """5 weight-normed conv3 + ELU, then a linear classifier; |.| gives F0 in Hz per mel frame."""

    def __init__(self, in_channels: int = 80, cond_channels: int = 512, num_class: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [
                weight_norm(Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1)),
                nn.ELU(),
            ]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 80, T) -> (B, T)."""
        x = self.condnet(mel).transpose(1, 2)
        return torch.abs(self.classifier(x).squeeze(-1))


class HiFTGenerator(nn.Module):
    """Mel (B, 80, T) -> waveform (B, T * 256)."""

    def __init__(self, cfg: HiFTConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or HiFTConfig()
        self.cfg = cfg
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.m_source = SourceModuleHnNSF(cfg)
        base = cfg.base_channels
        self.conv_pre = weight_norm(Conv1d(cfg.in_channels, base, 7, 1, padding=3))
        self.ups = nn.ModuleList(
            [
                weight_norm(ConvTranspose1d(base // 2**i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2))
                for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True))
            ]
        )
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        down_rates = [1] + cfg.upsample_rates[::-1][:-1]
        cum = np.cumprod(down_rates)[::-1]
        for i, (u, k, d) in enumerate(
            zip(cum, cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes, strict=True)
        ):
            ch = base // 2 ** (i + 1)
            u = int(u)
            if u == 1:
                self.source_downs.append(Conv1d(cfg.n_fft + 2, ch, 1, 1))
            else:
                self.source_downs.append(Conv1d(cfg.n_fft + 2, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))
        self.resblocks = nn.ModuleList()
        ch = base
        for i in range(len(self.ups)):
            ch = base // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
                self.resblocks.append(ResBlock(ch, k, d))
        self.conv_post = weight_norm(Conv1d(ch, cfg.n_fft + 2, 7, 1, padding=3))
        self.f0_predictor = ConvRNNF0Predictor(cfg.in_channels, cfg.f0_cond_channels)
        self.register_buffer("stft_window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)

    def source(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Excitation signal (B, 1, T * hop) from predicted F0."""
        f0 = self.f0_predictor(mel)
        f0_up = f0[:, None].repeat_interleave(self.cfg.hop, dim=-1)
        return self.m_source(f0_up, generator)

    def decode(self, mel: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Filter network + iSTFT given mel and source."""
        cfg = self.cfg
        win = self.stft_window.to(torch.float32)
        spec = torch.stft(s.squeeze(1).float(), cfg.n_fft, cfg.hop_len, cfg.n_fft, window=win, return_complex=True)
        s_stft = torch.cat([spec.real, spec.imag], dim=1).to(mel.dtype)
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = F.leaky_relu(x, cfg.lrelu_slope)
            x = up(x)
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s_stft))
            xs = sum(self.resblocks[i * self.num_kernels + j](x) for j in range(self.num_kernels))
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x)).float()
        half = cfg.n_fft // 2 + 1
        mag = torch.clamp(torch.exp(x[:, :half]), max=1e2)
        phase = torch.sin(x[:, half:])
        wav = torch.istft(
            torch.complex(mag * torch.cos(phase), mag * torch.sin(phase)), cfg.n_fft, cfg.hop_len, cfg.n_fft, window=win
        )
        return torch.clamp(wav, -cfg.audio_limit, cfg.audio_limit)

    @torch.inference_mode()
    def inference(
        self, mel: torch.Tensor, cache_source: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (waveform (B, N) fp32, source (B, 1, N)); ``cache_source`` overwrites the source head (streaming)."""
        mel = mel.to(self.conv_pre.weight_v.dtype)
        s = self.source(mel, generator)
        if cache_source is not None and cache_source.shape[-1] > 0:
            n = min(cache_source.shape[-1], s.shape[-1])
            s = s.clone()
            s[:, :, :n] = cache_source[:, :, :n].to(s.dtype)
        return self.decode(mel, s), s


def load_hift(path: str | Path, device: str | torch.device = "cpu", cfg: HiFTConfig | None = None) -> HiFTGenerator:
    """Load ``hift.pt`` with ``weights_only=True``, strict key matching. fp32 on every device: the reference casts
    only the flow model to bf16 on CUDA and keeps HiFT (and so the waveform) in fp32."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing")
    state = torch.load(str(p), map_location="cpu", weights_only=True)
    model = HiFTGenerator(cfg)
    model.load_state_dict(state, strict=True)
    return model.to(device=torch.device(device), dtype=torch.float32).eval()
