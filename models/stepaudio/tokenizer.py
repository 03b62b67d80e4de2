"""Step-Audio dual tokenizer: linguistic (Paraformer SANM encoder + k-means, 16.7 Hz) and semantic
(CosyVoice ``speech_tokenizer_v1.onnx``, 25 Hz), interleaved [2 linguistic, 3 semantic].

Linguistic path: the reference ALWAYS runs the Paraformer encoder in its streaming form, offline too, and so does
this module (:class:`LinguisticStream`; offline tokenisation is the same loop over the whole utterance, so a streamed
and an offline pass give the same ids):
  steps of 3840 samples (4 LFR frames); online front end per step: 16 kHz audio * 32768 -> Kaldi fbank (80 bins,
  25/10 ms, hamming, dither 0 here) over the cached tail + the new samples -> LFR (m 7, n 6; the first splice is 3
  copies of frame 0; the last step pads with the last frame) -> CMVN from ``am.mvn`` ((x + shift) * scale);
  encoder per step (FunASR ``SANMEncoderChunkOpt.forward_chunk``, chunk_size [0, 4, 5], look-back 4): x * sqrt(512)
  + sinusoidal positions (depth 560, absolute LFR index from 1), the window = the last 5 frames of the previous step
  (zeros at first) + the new frames; per layer, attention over a K/V cache of at most 16 earlier frames + the
  window, FSMN on the window only; ``after_norm``; only the newest frames kept (zero look-ahead) -> nearest of 1024
  centroids in ``linguistic_tokenizer.npy``. The reference's WavFrontendOnline dithers by default; this module uses
  dither 0 so that tokens are reproducible.
Semantic path: Whisper log-mel (128 bins) -> ONNX inputs (feats float32 (1, 128, T), feats_length int32 (1,)) ->
  first output, flattened (25 tokens/s); audio is processed in chunks of at most 30 s.

Streaming (:class:`StreamingDualTokenizer`): PCM chunks at any supported rate are resampled incrementally
(soxr stream); linguistic codes come every 3840 samples from the per-session :class:`LinguisticStream`, semantic
codes from 1.2 s blocks (provisional: :meth:`StreamingDualTokenizer.final_tokens` redoes the whole utterance,
peak-normalised, as the reference tokenizes it).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.stepaudio import audio_tokens as at
from models.stepaudio.audio import kaldi_fbank, peak_normalize, resample, whisper_log_mel
from models.stepaudio.flow import PositionwiseFeedForward

SAMPLE_RATE = 16000
LFR_FRAME_SAMPLES = 960  # 6 fbank frames x 10 ms
SEMANTIC_TOKEN_SAMPLES = 640  # 40 ms
MAX_SEMANTIC_CHUNK = 30 * SAMPLE_RATE


# ---------------------------------------------------------------------------- Paraformer encoder
@dataclass
class ParaformerConfig:
    """Encoder + frontend settings read from the FunASR ``config.yaml``."""

    output_size: int = 512
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 50
    kernel_size: int = 11
    sanm_shfit: int = 0
    n_mels: int = 80
    lfr_m: int = 7
    lfr_n: int = 6
    frame_length: float = 25.0
    frame_shift: float = 10.0
    window: str = "hamming"

    @property
    def input_size(self) -> int:
        """LFR feature size (n_mels * lfr_m)."""
        return self.n_mels * self.lfr_m

    @classmethod
    def from_yaml(cls, path: str | Path) -> ParaformerConfig:
        """Read ``encoder_conf`` and ``frontend_conf`` from a FunASR config.yaml."""
        import yaml

        d = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        enc = d.get("encoder_conf", {}) or {}
        fe = d.get("frontend_conf", {}) or {}
        cfg = cls()
        for k in ("output_size", "attention_heads", "linear_units", "num_blocks", "kernel_size", "sanm_shfit"):
            if k in enc:
                setattr(cfg, k, int(enc[k]))
        for k in ("n_mels", "lfr_m", "lfr_n"):
            if k in fe:
                setattr(cfg, k, int(fe[k]))
        for k in ("frame_length", "frame_shift"):
            if k in fe:
                setattr(cfg, k, float(fe[k]))
        if "window" in fe:
            cfg.window = str(fe["window"])
        return cfg


class LayerNorm(nn.LayerNorm):
    """ESPnet LayerNorm (eps 1e-12)."""

    def __init__(self, n: int) -> None:
        super().__init__(n, eps=1e-12)


class MultiHeadedAttentionSANM(nn.Module):
    """Self-attention with a depth-wise FSMN memory block on the values."""

    def __init__(self, heads: int, in_feat: int, n_feat: int, kernel_size: int, sanm_shfit: int = 0) -> None:
        super().__init__()
        self.h = heads
        self.d_k = n_feat // heads
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_q_k_v = nn.Linear(in_feat, n_feat * 3)
        self.fsmn_block = nn.Conv1d(n_feat, n_feat, kernel_size, stride=1, padding=0, groups=n_feat, bias=False)
        left = (kernel_size - 1) // 2 + (sanm_shfit if sanm_shfit > 0 else 0)
        self.pad = (left, kernel_size - 1 - left)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, in_feat) -> (B, T, n_feat)."""
        b, t, _ = x.shape
        q, k, v = torch.split(self.linear_q_k_v(x), self.h * self.d_k, dim=-1)
        fsmn = self.fsmn_block(nn.functional.pad(v.transpose(1, 2), self.pad)).transpose(1, 2) + v
        qh, kh, vh = (z.reshape(b, t, self.h, self.d_k).transpose(1, 2) for z in (q, k, v))
        scores = torch.matmul(qh * self.d_k**-0.5, kh.transpose(-2, -1))
        att = torch.matmul(torch.softmax(scores, dim=-1), vh).transpose(1, 2).reshape(b, t, -1)
        return self.linear_out(att) + fsmn


class EncoderLayerSANM(nn.Module):
    """Pre-norm SANM layer; no attention residual when in_size != size (first layer)."""

    def __init__(self, in_size: int, size: int, cfg: ParaformerConfig) -> None:
        super().__init__()
        self.in_size, self.size = in_size, size
        self.self_attn = MultiHeadedAttentionSANM(cfg.attention_heads, in_size, size, cfg.kernel_size, cfg.sanm_shfit)
        self.feed_forward = PositionwiseFeedForward(size, cfg.linear_units, torch.relu)
        self.norm1 = LayerNorm(in_size)
        self.norm2 = LayerNorm(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply."""
        a = self.self_attn(self.norm1(x))
        x = x + a if self.in_size == self.size else a
        return x + self.feed_forward(self.norm2(x))


def sinusoidal_positions(t: int, depth: int, offset: int = 0) -> torch.Tensor:
    """FunASR ``SinusoidalPositionEncoder``: positions offset+1..offset+t, (1, t, depth)."""
    pos = torch.arange(offset + 1, offset + t + 1, dtype=torch.float32)
    inc = math.log(10000.0) / (depth / 2 - 1)
    inv = torch.exp(torch.arange(depth // 2, dtype=torch.float32) * -inc)
    st = pos[:, None] * inv[None, :]
    return torch.cat([torch.sin(st), torch.cos(st)], dim=1)[None]


class SANMEncoder(nn.Module):
    """Paraformer encoder (parameter names as ``encoder.*`` in FunASR model.pt)."""

    def __init__(self, cfg: ParaformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders0 = nn.ModuleList([EncoderLayerSANM(cfg.input_size, cfg.output_size, cfg)])
        self.encoders = nn.ModuleList(
            [EncoderLayerSANM(cfg.output_size, cfg.output_size, cfg) for _ in range(cfg.num_blocks - 1)]
        )
        self.after_norm = LayerNorm(cfg.output_size)

    def forward(self, feats: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """LFR+CMVN features (B, T, 560) -> (B, T, 512); ``offset`` = absolute index of the first frame."""
        x = feats * self.cfg.output_size**0.5
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], offset).to(x)
        for layer in self.encoders0:
            x = layer(x)
        for layer in self.encoders:
            x = layer(x)
        return self.after_norm(x)


def load_cmvn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse Kaldi-nnet ``am.mvn``: returns (AddShift, Rescale) vectors."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    shift: list[str] = []
    scale: list[str] = []
    for i, line in enumerate(lines):
        parts = line.split()
        if not parts or i + 1 >= len(lines):
            continue
        nxt = lines[i + 1].split()
        if parts[0] == "<AddShift>" and nxt and nxt[0] == "<LearnRateCoef>":
            shift = nxt[3:-1]
        elif parts[0] == "<Rescale>" and nxt and nxt[0] == "<LearnRateCoef>":
            scale = nxt[3:-1]
    if not shift or not scale:
        raise ValueError(f"{path}: no <AddShift>/<Rescale> blocks found")
    return np.array(shift, dtype=np.float32), np.array(scale, dtype=np.float32)


def apply_lfr(feats: torch.Tensor, lfr_m: int, lfr_n: int) -> torch.Tensor:
    """Low frame rate stacking as FunASR ``apply_lfr``: (T, D) -> (ceil(T / n), m * D)."""
    t = feats.shape[0]
    if t == 0:
        return feats.new_zeros(0, feats.shape[1] * lfr_m)
    t_lfr = math.ceil(t / lfr_n)
    left = (lfr_m - 1) // 2
    padded = torch.cat([feats[:1].repeat(left, 1), feats], dim=0)
    need = (t_lfr - 1) * lfr_n + lfr_m
    if padded.shape[0] < need:
        padded = torch.cat([padded, padded[-1:].repeat(need - padded.shape[0], 1)], dim=0)
    idx = torch.arange(t_lfr)[:, None] * lfr_n + torch.arange(lfr_m)[None, :]
    return padded[idx].reshape(t_lfr, -1)


STEP_SAMPLES = 3840  # one encoder step: chunk_size[1] = 4 LFR frames of 960 samples
OVERLAP_FRAMES = 5  # chunk_size[2]: frames of the previous window prepended to each step
LOOK_BACK_FRAMES = 16  # encoder_chunk_look_back 4 x chunk_size[1] 4: K/V cache per layer


class LinguisticStream:
    """One utterance through the Paraformer encoder in its streaming form (see the module docstring).

    ``push(samples16k) -> codes`` for every complete 3840-sample step; ``finish() -> codes`` for the tail.
    """

    def __init__(self, tokenizer: LinguisticTokenizer) -> None:
        self.tok = tokenizer
        self.cfg = tokenizer.cfg
        self.pending = np.zeros(0, dtype=np.float32)  # samples not yet in a step
        self.input_cache = np.zeros(0, dtype=np.float32)  # samples after the last full fbank frame
        self.splice: torch.Tensor | None = None  # fbank frames waiting for LFR
        self.start_idx = 0  # LFR frames encoded so far (absolute positions)
        self.feats_cache = torch.zeros(1, OVERLAP_FRAMES, self.cfg.input_size)
        n_layers = len(tokenizer.encoder.encoders0) + len(tokenizer.encoder.encoders)
        self.kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.finished = False

    # ---------------------------------------------------------------- front end (WavFrontendOnline)
    def _frontend(self, chunk: np.ndarray, final: bool) -> torch.Tensor:
        cfg = self.cfg
        x = np.concatenate([self.input_cache, chunk])
        fn = int((x.size - 400) / 160 + 1) if x.size >= 400 else 0
        self.input_cache = x[fn * 160 :]
        empty = torch.zeros(0, cfg.input_size)
        if fn == 0:
            if not (final and self.splice is not None):
                return empty
            t = self.splice
        else:
            fb = kaldi_fbank(x[: (fn - 1) * 160 + 400] * 32768.0, SAMPLE_RATE, cfg.n_mels, cfg.frame_length,
                             cfg.frame_shift, window_type=cfg.window, dither=0.0, energy_floor=0.0).float()
            if self.splice is None:
                self.splice = fb[:1].repeat((cfg.lfr_m - 1) // 2, 1)
            if fn + self.splice.shape[0] < cfg.lfr_m:
                self.splice = torch.cat([self.splice, fb])
                return empty
            t = torch.cat([self.splice, fb])
        m, n = cfg.lfr_m, cfg.lfr_n
        t_lfr = math.ceil((t.shape[0] - (m - 1) // 2) / n)
        frames = []
        for i in range(t_lfr):
            if i * n + m <= t.shape[0]:
                frames.append(t[i * n : i * n + m].reshape(-1))
            elif final:
                tail = t[i * n :]
                frames.append(torch.cat([tail, tail[-1:].repeat(m - tail.shape[0], 1)]).reshape(-1))
            else:
                break
        self.splice = t[n * len(frames) :]
        if not frames:
            return empty
        return (torch.stack(frames) + self.tok.shift) * self.tok.scale

    # ---------------------------------------------------------------- encoder (SANMEncoderChunkOpt.forward_chunk)
    def _layer(self, i: int, layer: EncoderLayerSANM, h: torch.Tensor) -> torch.Tensor:
        att = layer.self_attn
        w = h.shape[1]
        r = h
        h = layer.norm1(h)
        q, k, v = torch.split(att.linear_q_k_v(h), att.h * att.d_k, dim=-1)
        fsmn = att.fsmn_block(nn.functional.pad(v.transpose(1, 2), att.pad)).transpose(1, 2) + v
        qh, kh, vh = (z.reshape(1, w, att.h, att.d_k).transpose(1, 2) for z in (q, k, v))
        keep = w - OVERLAP_FRAMES  # the window's oldest frames enter the cache
        cache = self.kv[i]
        if cache is None:
            self.kv[i] = (kh[:, :, :keep], vh[:, :, :keep])
        else:
            k_all, v_all = torch.cat([cache[0], kh], dim=2), torch.cat([cache[1], vh], dim=2)
            self.kv[i] = (torch.cat([cache[0], kh[:, :, :keep]], dim=2)[:, :, -LOOK_BACK_FRAMES:],
                          torch.cat([cache[1], vh[:, :, :keep]], dim=2)[:, :, -LOOK_BACK_FRAMES:])
            kh, vh = k_all, v_all
        scores = torch.matmul(qh * att.d_k**-0.5, kh.transpose(-2, -1))
        out = torch.matmul(torch.softmax(scores, dim=-1), vh).transpose(1, 2).reshape(1, w, -1)
        x = att.linear_out(out) + fsmn
        x = x + r if layer.in_size == layer.size else x
        return x + layer.feed_forward(layer.norm2(x))

    @torch.inference_mode()
    def _encode(self, feats: torch.Tensor) -> np.ndarray:
        n = feats.shape[0]
        enc = self.tok.encoder
        xs = feats[None] * self.cfg.output_size**0.5
        xs = xs + sinusoidal_positions(n, xs.shape[2], self.start_idx).to(xs)
        self.start_idx += n
        h = torch.cat([self.feats_cache, xs], dim=1)
        self.feats_cache = h[:, -OVERLAP_FRAMES:]
        for i, layer in enumerate([*enc.encoders0, *enc.encoders]):
            h = self._layer(i, layer, h)
        return self.tok.quantize(enc.after_norm(h)[0, -n:])

    def _step(self, chunk: np.ndarray, final: bool) -> list[int]:
        feats = self._frontend(chunk, final)
        return [] if feats.shape[0] == 0 else self._encode(feats).tolist()

    def push(self, samples16k: np.ndarray) -> list[int]:
        """Add 16 kHz audio; codes of every complete step."""
        if self.finished:
            raise RuntimeError("push() after finish()")
        self.pending = np.concatenate([self.pending, np.asarray(samples16k, dtype=np.float32).reshape(-1)])
        out: list[int] = []
        while self.pending.size >= STEP_SAMPLES:
            chunk, self.pending = self.pending[:STEP_SAMPLES], self.pending[STEP_SAMPLES:]
            out += self._step(chunk, final=False)
        return out

    def finish(self) -> list[int]:
        """The last (partial, possibly empty) step, with ``is_final``: the tail frames padded and flushed."""
        if self.finished:
            return []
        self.finished = True
        chunk, self.pending = self.pending, np.zeros(0, dtype=np.float32)
        if chunk.size == 0:
            return []  # the reference breaks on an empty final step
        return self._step(chunk, final=True)


class LinguisticTokenizer:
    """Paraformer encoder + k-means quantiser (vq02)."""

    def __init__(self, encoder: SANMEncoder, cmvn: tuple[np.ndarray, np.ndarray], centroids: np.ndarray) -> None:
        self.encoder = encoder.eval()
        self.cfg = encoder.cfg
        self.shift = torch.from_numpy(cmvn[0])
        self.scale = torch.from_numpy(cmvn[1])
        c = np.asarray(centroids, dtype=np.float32)
        if c.ndim != 2 or c.shape[1] != self.cfg.output_size:
            raise ValueError(f"centroids shape {c.shape} does not match encoder width {self.cfg.output_size}")
        self.centroids = torch.from_numpy(c)

    @classmethod
    def load(cls, paraformer_dir: str | Path, centroids_path: str | Path) -> LinguisticTokenizer:
        """Load a FunASR checkpoint dir (model.pt, config.yaml, am.mvn) and ``linguistic_tokenizer.npy``."""
        root = Path(paraformer_dir)
        for name in ("model.pt", "config.yaml", "am.mvn"):
            if not (root / name).is_file():
                raise FileNotFoundError(f"{root / name} is missing")
        cfg = ParaformerConfig.from_yaml(root / "config.yaml")
        state = torch.load(str(root / "model.pt"), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        enc_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        encoder = SANMEncoder(cfg)
        encoder.load_state_dict(enc_state, strict=True)
        return cls(encoder.float(), load_cmvn(root / "am.mvn"), np.load(str(centroids_path)))

    def features(self, audio16k: np.ndarray) -> torch.Tensor:
        """Fbank -> LFR -> CMVN: (T_lfr, 560)."""
        cfg = self.cfg
        fb = kaldi_fbank(
            np.asarray(audio16k, dtype=np.float32) * 32768.0,
            SAMPLE_RATE,
            cfg.n_mels,
            cfg.frame_length,
            cfg.frame_shift,
            window_type=cfg.window,
            dither=0.0,
            energy_floor=0.0,
        )
        lfr = apply_lfr(fb, cfg.lfr_m, cfg.lfr_n)
        return (lfr + self.shift) * self.scale

    @torch.inference_mode()
    def encode_features(self, feats: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """(T, 560) -> encoder output (T, 512)."""
        if feats.shape[0] == 0:
            return feats.new_zeros(0, self.cfg.output_size)
        return self.encoder(feats[None].float(), offset)[0]

    def quantize(self, enc: torch.Tensor) -> np.ndarray:
        """Nearest-centroid codes (Euclidean)."""
        if enc.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        return torch.cdist(enc.float(), self.centroids).argmin(dim=1).numpy().astype(np.int64)

    def stream(self) -> LinguisticStream:
        """A per-utterance streaming encoder state."""
        return LinguisticStream(self)

    def tokenize(self, audio16k: np.ndarray) -> np.ndarray:
        """Linguistic codes of a whole utterance, ~16.7 per second, through the streaming encoder (as the
        reference computes them offline too)."""
        st = self.stream()
        codes = st.push(audio16k) + st.finish()
        return np.asarray(codes, dtype=np.int64)

    def tokenize_full_context(self, audio16k: np.ndarray) -> np.ndarray:
        """Codes with the whole utterance as context (NOT what the reference computes; kept for comparison)."""
        return self.quantize(self.encode_features(self.features(audio16k)))


class SemanticTokenizer:
    """CosyVoice ``speech_tokenizer_v1.onnx`` (vq06) through ONNX Runtime."""

    def __init__(self, onnx_path: str | Path, providers: list[str] | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        p = Path(onnx_path)
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(p), sess_options=opts, providers=providers or ["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) < 2:
            raise ValueError(f"{p}: expected 2 inputs (feats, feats_length), found {[i.name for i in inputs]}")
        self.feats_name = inputs[0].name
        self.len_name = inputs[1].name
        self.lock = threading.Lock()

    def tokenize_chunk(self, audio16k: np.ndarray) -> np.ndarray:
        """Codes for one chunk (<= 30 s), 25 per second."""
        x = np.asarray(audio16k, dtype=np.float32)
        if x.size < 480:
            return np.zeros(0, dtype=np.int64)
        feat = whisper_log_mel(x, 128)[None].numpy().astype(np.float32)
        with self.lock:
            out = self.session.run(
                None, {self.feats_name: feat, self.len_name: np.array([feat.shape[2]], dtype=np.int32)}
            )
        return np.asarray(out[0]).reshape(-1).astype(np.int64)

    def tokenize(self, audio16k: np.ndarray) -> np.ndarray:
        """Codes for audio of any length (30 s chunks)."""
        x = np.asarray(audio16k, dtype=np.float32)
        parts = [self.tokenize_chunk(x[i : i + MAX_SEMANTIC_CHUNK]) for i in range(0, x.size, MAX_SEMANTIC_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass
class DualTokens:
    """Raw codes of both streams and their interleaved ``<audio_X>`` indices."""

    linguistic: np.ndarray
    semantic: np.ndarray
    interleaved: np.ndarray

    @property
    def vocab_ids(self) -> list[int]:
        """LLM ids (65536 + X)."""
        return [int(i) for i in at.to_vocab_ids(self.interleaved)]


class DualTokenizer:
    """Offline dual tokenizer; also the factory for per-session streaming tokenizers."""

    def __init__(self, linguistic: LinguisticTokenizer, semantic: SemanticTokenizer) -> None:
        self.linguistic = linguistic
        self.semantic = semantic

    @classmethod
    def load(cls, tokenizer_dir: str | Path, paraformer_subdir: str | None = None) -> DualTokenizer:
        """Load from a Step-Audio-Tokenizer directory.

        Expects ``linguistic_tokenizer.npy``, ``speech_tokenizer_v1.onnx`` and the FunASR dir
        ``dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online`` (or ``paraformer_subdir``).
        """
        root = Path(tokenizer_dir)
        sub = paraformer_subdir or "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
        ling = LinguisticTokenizer.load(root / sub, root / "linguistic_tokenizer.npy")
        sem = SemanticTokenizer(root / "speech_tokenizer_v1.onnx")
        return cls(ling, sem)

    @staticmethod
    def prepare(audio: np.ndarray, sample_rate: int, normalize: bool = True) -> np.ndarray:
        """Mono float audio at any supported rate -> 16 kHz, peak-normalised to 0.999."""
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=0 if x.shape[0] < x.shape[1] else 1)
        x = resample(x, sample_rate, SAMPLE_RATE)
        return peak_normalize(x) if normalize else x

    def tokenize(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, normalize: bool = True) -> DualTokens:
        """Offline tokenisation of a whole utterance."""
        x = self.prepare(audio, sample_rate, normalize)
        lin = self.linguistic.tokenize(x)
        sem = self.semantic.tokenize(x)
        return DualTokens(lin, sem, at.interleave(lin, sem))

    def stream(self, sample_rate: int = SAMPLE_RATE, **kwargs: object) -> StreamingDualTokenizer:
        """New per-session streaming tokenizer."""
        return StreamingDualTokenizer(self, sample_rate, **kwargs)  # type: ignore[arg-type]


class StreamingDualTokenizer:
    """Per-session incremental tokenizer: ``feed(pcm) -> new X tokens``; ``finish() -> remaining X tokens``;
    ``final_tokens()`` -> the final pass over the whole utterance.

    Linguistic codes come from the session's :class:`LinguisticStream` (the codes an offline pass of the same,
    un-normalised audio gives; the final pass normalises the whole utterance first, as the reference does).
    Semantic codes are provisional: ``block_s`` blocks of un-normalised audio (a multiple of 0.12 s, whole groups).
    """

    def __init__(self, tokenizer: DualTokenizer, sample_rate: int = SAMPLE_RATE, block_s: float = 1.2) -> None:
        import soxr

        if sample_rate not in (8000, 16000, 22050, 24000, 44100, 48000):
            raise ValueError(f"sample rate {sample_rate} not supported; use 8000/16000/22050/24000/44100/48000")
        if round(block_s / 0.12, 6) != round(block_s / 0.12):
            raise ValueError("block_s must be a multiple of 0.12 s")
        self.tok = tokenizer
        self.sample_rate = sample_rate
        self._rs = (
            None if sample_rate == SAMPLE_RATE else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32")
        )
        self.block = int(round(block_s * SAMPLE_RATE))
        self.audio = np.zeros(0, dtype=np.float32)
        self.ling = tokenizer.linguistic.stream()
        self.done_blocks = 0
        self.lin: list[int] = []
        self.sem: list[int] = []
        self.emitted_groups = 0
        self.finished = False

    @property
    def samples_16k(self) -> int:
        """16 kHz samples received so far."""
        return int(self.audio.size)

    def _emit(self) -> list[int]:
        g = at.num_groups(len(self.lin), len(self.sem))
        if g <= self.emitted_groups:
            return []
        lo = self.emitted_groups
        out = at.interleave(
            self.lin[lo * at.GROUP_LINGUISTIC : g * at.GROUP_LINGUISTIC],
            self.sem[lo * at.GROUP_SEMANTIC : g * at.GROUP_SEMANTIC],
        )
        self.emitted_groups = g
        return [int(x) for x in out]

    def _semantic_blocks(self, final: bool) -> None:
        while (self.done_blocks + 1) * self.block <= self.audio.size or (
                final and self.done_blocks * self.block < self.audio.size):
            s = self.done_blocks * self.block
            self.sem += self.tok.semantic.tokenize_chunk(self.audio[s : s + self.block]).tolist()
            self.done_blocks += 1

    def feed(self, pcm: np.ndarray) -> list[int]:
        """Add float PCM (mono, [-1, 1]) or int16 PCM at the session rate; return newly complete X tokens."""
        if self.finished:
            raise RuntimeError("feed() after finish(); start a new session")
        x = np.asarray(pcm)
        x = (x.astype(np.float32) / 32768.0) if x.dtype == np.int16 else x.astype(np.float32)
        x = x.reshape(-1)
        if self._rs is not None:
            x = np.asarray(self._rs.resample_chunk(x, last=False), dtype=np.float32)
        self.audio = np.concatenate([self.audio, x])
        self.lin += self.ling.push(x)
        self._semantic_blocks(final=False)
        return self._emit()

    def final_tokens(self) -> list[int]:
        """After :meth:`finish`: the final pass over the whole utterance, as the reference tokenizes it (peak
        normalisation, semantic tokens of the whole utterance in 30 s chunks). The streamed tokens were
        provisional: the semantic ones came from 1.2 s blocks of un-normalised audio."""
        if not self.finished:
            self.finish()
        return [int(x) for x in self.tok.tokenize(self.audio, SAMPLE_RATE, normalize=True).interleaved]

    def finish(self) -> list[int]:
        """Flush the resampler and the tail; returns the last X tokens (partial group dropped)."""
        if self.finished:
            return []
        self.finished = True
        if self._rs is not None:
            tail = np.asarray(self._rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True), dtype=np.float32)
            self.audio = np.concatenate([self.audio, tail])
            self.lin += self.ling.push(tail)
        self.lin += self.ling.finish()
        self._semantic_blocks(final=True)
        return self._emit()
