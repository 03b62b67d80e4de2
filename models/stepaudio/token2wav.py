"""Token-to-waveform: flow matching (tokens -> mel) + HiFT (mel -> 22,050 Hz), offline and streaming.

The flow model is non-causal, so streaming synthesises overlapping token windows and cross-fades the mel in
the overlap. ODE start noise is drawn once per session and indexed by absolute mel frame, so overlapping
windows start from the same noise as offline synthesis; away from seams the streamed mel closely tracks the
offline one. The vocoder runs on emitted mel with a left context and a small held-back right edge, reusing
the previous excitation (``cache_source``) over the context so the NSF source stays continuous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.stepaudio.flow import MaskedDiffWithXvec
from models.stepaudio.hift import HiFTGenerator


@dataclass
class FlowPrompt:
    """Voice conditioning for the flow: prompt tokens X (0..5119), prompt mel (M1, 80), x-vector (192,)."""

    tokens: np.ndarray
    mel: np.ndarray
    embedding: np.ndarray


class Token2Wav:
    """Flow + HiFT with one voice prompt."""

    def __init__(self, flow: MaskedDiffWithXvec, hift: HiFTGenerator, seed: int = 0) -> None:
        self.flow = flow.eval()
        self.hift = hift.eval()
        self.seed = seed
        self.device = next(flow.parameters()).device

    @property
    def sample_rate(self) -> int:
        """Output rate (22,050 Hz)."""
        return self.hift.cfg.sampling_rate

    def _prompt_tensors(self, prompt: FlowPrompt) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pt = torch.as_tensor(np.asarray(prompt.tokens, dtype=np.int64), device=self.device)[None]
        pm = torch.as_tensor(np.asarray(prompt.mel, dtype=np.float32), device=self.device)[None]
        emb = torch.as_tensor(np.asarray(prompt.embedding, dtype=np.float32), device=self.device).reshape(1, -1)
        return pt, pm, emb

    def session_noise(self, prompt: FlowPrompt, n_frames: int, seed: int | None = None) -> torch.Tensor:
        """Noise (1, 80, M1 + n_frames) from a seeded CPU generator (shared by offline and streaming).

        Drawn frame-major so that frame j gets the same values whatever ``n_frames`` is.
        """
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        return torch.randn(len(prompt.mel) + n_frames, self.flow.cfg.output_size, generator=g).T[None].contiguous()

    def mel_window(
        self, tokens: Sequence[int], prompt: FlowPrompt, t0: int, t1: int, noise: torch.Tensor
    ) -> tuple[int, np.ndarray]:
        """Mel for token window [t0, t1) of ``tokens``; returns (first absolute frame, mel (80, F))."""
        f = self.flow.cfg.mel_frames
        fa, fb = f(t0), f(t1)
        pt, pm, emb = self._prompt_tensors(prompt)
        m1 = pm.shape[1]
        tok = torch.as_tensor(np.asarray(tokens[t0:t1], dtype=np.int64), device=self.device)[None]
        nz = torch.cat([noise[:, :, :m1], noise[:, :, m1 + fa : m1 + fb]], dim=2)
        mel = self.flow.inference(tok, pt, pm, emb, noise=nz, mel_len2=fb - fa)
        return fa, mel[0].cpu().numpy()

    def offline_mel(
        self, tokens: Sequence[int], prompt: FlowPrompt, seed: int | None = None, max_tokens: int = 8192
    ) -> np.ndarray:
        """Whole-utterance mel (80, F); noise identical to a stream with the same seed and ``max_tokens``."""
        n = len(tokens)
        if n > max_tokens:
            raise ValueError(f"utterance exceeds max_tokens={max_tokens}")
        noise = self.session_noise(prompt, self.flow.cfg.mel_frames(max_tokens), seed)
        return self.mel_window(tokens, prompt, 0, n, noise)[1]

    @torch.inference_mode()
    def vocode(self, mel: np.ndarray, seed: int | None = None) -> np.ndarray:
        """HiFT on a mel (80, F) -> float32 waveform."""
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        m = torch.as_tensor(mel, dtype=torch.float32, device=self.device)[None]
        wav, _ = self.hift.inference(m, generator=g)
        return wav[0].float().cpu().numpy()

    def offline(
        self, tokens: Sequence[int], prompt: FlowPrompt, seed: int | None = None, max_tokens: int = 8192
    ) -> np.ndarray:
        """Offline synthesis of all tokens."""
        return self.vocode(self.offline_mel(tokens, prompt, seed, max_tokens), seed)

    def stream(self, prompt: FlowPrompt, **kwargs: int) -> Token2WavStream:
        """Start a streaming session for one utterance."""
        return Token2WavStream(self, prompt, **kwargs)


class Token2WavStream:
    """Incremental synthesis: ``push(tokens) -> [waveform chunks]``, ``finish() -> [last chunks]``."""

    def __init__(
        self,
        engine: Token2Wav,
        prompt: FlowPrompt,
        chunk_tokens: int = 50,
        overlap_tokens: int = 10,
        max_tokens: int = 8192,
        vocoder_context: int = 8,
        vocoder_hold: int = 4,
        seed: int | None = None,
    ) -> None:
        if overlap_tokens <= 0 or chunk_tokens <= overlap_tokens:
            raise ValueError("need 0 < overlap_tokens < chunk_tokens")
        self.e = engine
        self.prompt = prompt
        self.chunk = chunk_tokens
        self.ov = overlap_tokens
        self.noise = engine.session_noise(prompt, engine.flow.cfg.mel_frames(max_tokens), seed)
        self.max_tokens = max_tokens
        self.tokens: list[int] = []
        self.next_start = 0  # first token not yet finalised
        self.mel_done = 0  # absolute frames finalised
        self.held: np.ndarray | None = None  # (80, k) frames after mel_done from the previous window
        self.mel: list[np.ndarray] = []
        self.voc_ctx = vocoder_context
        self.voc_hold = vocoder_hold
        self.voc_done = 0  # mel frames already vocoded
        self.prev_source: torch.Tensor | None = None
        self.gen = torch.Generator().manual_seed(engine.seed if seed is None else seed)
        self.finished = False

    def _all_mel(self) -> np.ndarray:
        return np.concatenate(self.mel, axis=1) if self.mel else np.zeros((self.e.flow.cfg.output_size, 0), np.float32)

    def _step(self, final: bool) -> None:
        f = self.e.flow.cfg.mel_frames
        end = len(self.tokens) if final else self.next_start + self.chunk
        t0 = max(0, self.next_start - self.ov)
        t1 = len(self.tokens) if final else min(len(self.tokens), end + self.ov)
        fa, mel = self.e.mel_window(self.tokens, self.prompt, t0, t1, self.noise)
        cut = f(end) if not final else fa + mel.shape[1]
        new = mel[:, self.mel_done - fa : cut - fa]
        if self.held is not None and self.held.shape[1] > 0:
            k = min(self.held.shape[1], new.shape[1])
            w = np.linspace(0.0, 1.0, k + 2, dtype=np.float32)[1:-1]
            new = new.copy()
            new[:, :k] = self.held[:, :k] * (1 - w) + new[:, :k] * w
        self.mel.append(new)
        self.held = mel[:, cut - fa :]
        self.mel_done = cut
        self.next_start = end

    @torch.inference_mode()
    def _vocode(self, final: bool) -> np.ndarray | None:
        mel = self._all_mel()
        stop = mel.shape[1] if final else mel.shape[1] - self.voc_hold
        if stop <= self.voc_done:
            return None
        hop = self.e.hift.cfg.hop
        ctx_start = max(0, self.voc_done - self.voc_ctx)
        m = torch.as_tensor(mel[:, ctx_start:stop], dtype=torch.float32, device=self.e.device)[None]  # HiFT: fp32
        cache = None
        if self.prev_source is not None and ctx_start < self.voc_done:
            cache = self.prev_source[:, :, (ctx_start * hop) :]
        wav, src = self.e.hift.inference(m, cache_source=cache, generator=self.gen)
        self.prev_source = (
            torch.cat([self.prev_source[:, :, : ctx_start * hop], src], dim=2) if self.prev_source is not None else src
        )
        out = wav[0, (self.voc_done - ctx_start) * hop :].float().cpu().numpy()
        self.voc_done = stop
        return out

    def push(self, tokens: Sequence[int]) -> list[np.ndarray]:
        """Add X tokens (0..5119); returns waveform chunks that became final."""
        if self.finished:
            raise RuntimeError("push() after finish()")
        self.tokens += [int(t) for t in tokens]
        if len(self.tokens) > self.max_tokens:
            raise ValueError(f"utterance exceeds max_tokens={self.max_tokens}")
        out: list[np.ndarray] = []
        while len(self.tokens) >= self.next_start + self.chunk + self.ov:
            self._step(final=False)
            w = self._vocode(final=False)
            if w is not None and w.size:
                out.append(w)
        return out

    def finish(self) -> list[np.ndarray]:
        """Synthesise the rest."""
        if self.finished:
            return []
        self.finished = True
        out: list[np.ndarray] = []
        if len(self.tokens) > self.next_start:
            self._step(final=True)
        elif self.held is not None and self.held.shape[1]:
            self.mel.append(self.held)
            self.held = None
        w = self._vocode(final=True)
        if w is not None and w.size:
            out.append(w)
        return out

    @property
    def mel_so_far(self) -> np.ndarray:
        """All finalised mel frames (80, F)."""
        return self._all_mel()
