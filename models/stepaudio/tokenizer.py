"""Step-Audio dual tokenizer: linguistic (Paraformer SANM encoder + k-means, 16.7 Hz) and semantic
(CosyVoice ``speech_tokenizer_v1.onnx``, 25 Hz), interleaved [2 linguistic, 3 semantic].

Linguistic path (faithful to FunASR ``WavFrontend`` + ``SANMEncoder``):
  16 kHz float audio * 32768 -> Kaldi fbank (80 bins, 25/10 ms, hamming, dither 0) -> LFR (m 7, n 6, left-pad
  3 copies of frame 0) -> CMVN from ``am.mvn`` ((x + shift) * scale) -> x * sqrt(512) + sinusoidal positions
  (depth 560, positions from 1) -> ``encoders0`` (560 -> 512, no residual) -> 49 x ``encoders`` -> ``after_norm``
  -> nearest of 1024 centroids in ``linguistic_tokenizer.npy``.
Semantic path: Whisper log-mel (128 bins) -> ONNX inputs (feats float32 (1, 128, T), feats_length int32 (1,)) ->
  first output, flattened (25 tokens/s); audio is processed in chunks of at most 30 s.

Streaming (:class:`StreamingDualTokenizer`): PCM chunks at any supported rate are resampled incrementally
(soxr stream) and processed in 1.2 s blocks (= 20 linguistic + 30 semantic codes = 10 groups). The
linguistic encoder sees a bounded left context and a small look-ahead, as the FunASR online model
(chunk [0, 4, 5], encoder look-back 4) does, so streaming codes can differ slightly from offline ones
near block edges. The reference's chunk-masked attention cache is NOT replicated bit-exactly.
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

    def tokenize(self, audio16k: np.ndarray) -> np.ndarray:
        """Offline (full-context) linguistic codes, ~16.7 per second."""
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
    """Per-session incremental tokenizer: ``feed(pcm) -> new X tokens``; ``finish() -> remaining X tokens``.

    Audio is processed in blocks of ``block_s`` seconds (a multiple of 0.12 s so that both streams give whole
    groups). The linguistic encoder for a block sees ``left_context_s`` of earlier audio and waits for
    ``lookahead_s`` of later audio. No peak normalisation is applied in streaming (the level is unknown ahead).
    """

    def __init__(
        self,
        tokenizer: DualTokenizer,
        sample_rate: int = SAMPLE_RATE,
        block_s: float = 1.2,
        left_context_s: float = 0.96,
        lookahead_s: float = 0.3,
    ) -> None:
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
        self.block_lfr = self.block // LFR_FRAME_SAMPLES
        self.left_lfr = int(round(left_context_s * SAMPLE_RATE)) // LFR_FRAME_SAMPLES
        self.look = int(round(lookahead_s * SAMPLE_RATE))
        self.audio = np.zeros(0, dtype=np.float32)
        self.done_blocks = 0
        self.lin: list[int] = []
        self.sem: list[int] = []
        self.emitted_groups = 0
        self.finished = False

    @property
    def samples_16k(self) -> int:
        """16 kHz samples received so far."""
        return int(self.audio.size)

    def _block_codes(self, start: int, end: int, final: bool) -> None:
        ling = self.tok.linguistic
        ctx_start = max(0, start - self.left_lfr * LFR_FRAME_SAMPLES)
        stop = self.audio.size if final else min(self.audio.size, end + self.look)
        feats = ling.features(self.audio[ctx_start:stop])
        first = (start - ctx_start) // LFR_FRAME_SAMPLES
        n_lfr = math.ceil((end - start) / LFR_FRAME_SAMPLES) if final else self.block_lfr
        enc = ling.encode_features(feats, offset=ctx_start // LFR_FRAME_SAMPLES)
        self.lin += ling.quantize(enc[first : first + n_lfr]).tolist()
        self.sem += self.tok.semantic.tokenize_chunk(self.audio[start:end]).tolist()

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
        while (self.done_blocks + 1) * self.block + self.look <= self.audio.size:
            s = self.done_blocks * self.block
            self._block_codes(s, s + self.block, final=False)
            self.done_blocks += 1
        return self._emit()

    def finish(self) -> list[int]:
        """Flush the resampler and the tail; returns the last X tokens (partial group dropped)."""
        if self.finished:
            return []
        self.finished = True
        if self._rs is not None:
            tail = np.asarray(self._rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True), dtype=np.float32)
            self.audio = np.concatenate([self.audio, tail])
        while self.done_blocks * self.block < self.audio.size:
            s = self.done_blocks * self.block
            e = min(s + self.block, self.audio.size)
            if e - s < 480:
                break
            self._block_codes(s, e, final=e == self.audio.size)
            self.done_blocks += 1
        return self._emit()
