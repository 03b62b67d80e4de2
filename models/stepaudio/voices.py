"""CAM++ speaker embedding (``campplus.onnx``) and an on-disk voice registry.

A voice = prompt wav + its exact transcript, precomputed into: interleaved dual tokens (LLM ids 65536+X, used
in the TTS-3B prompt; X values condition the flow), a 22.05 kHz 80-bin prompt mel and a 192-d CAM++ x-vector.
Each voice is stored as ``{root}/{name}.npz``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.stepaudio import audio_tokens as at
from models.stepaudio.audio import cosyvoice_mel, kaldi_fbank, peak_normalize, resample
from models.stepaudio.tokenizer import DualTokenizer

_NAME_RE = re.compile(r"^[\w\-\u4e00-\u9fff]{1,64}$")


class CampPlus:
    """CAM++ x-vector through ONNX Runtime: 80-bin Kaldi fbank at 16 kHz, mean-normalised, -> (192,)."""

    def __init__(self, onnx_path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        p = Path(onnx_path)
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.lock = threading.Lock()

    def embed(self, audio16k: np.ndarray) -> np.ndarray:
        """Speaker embedding of 16 kHz float audio."""
        feat = kaldi_fbank(np.asarray(audio16k, dtype=np.float32), 16000, 80, dither=0.0)
        if feat.shape[0] == 0:
            raise ValueError("audio too short for a speaker embedding (needs >= 25 ms)")
        feat = feat - feat.mean(dim=0, keepdim=True)
        with self.lock:
            out = self.session.run(None, {self.input_name: feat[None].numpy().astype(np.float32)})
        return np.asarray(out[0], dtype=np.float32).reshape(-1)


@dataclass
class VoiceEntry:
    """Precomputed voice prompt."""

    name: str
    prompt_text: str
    prompt_audio_ids: list[int]  # 65536 + X, interleaved
    prompt_mel: np.ndarray  # (M, 80) at 22.05 kHz
    embedding: np.ndarray  # (192,)

    @property
    def flow_tokens(self) -> np.ndarray:
        """Prompt tokens for the flow model (X = id - 65536)."""
        return at.from_vocab_ids(self.prompt_audio_ids)


def nonsilent_span(x: np.ndarray, top_db: float = 20.0, frame: int = 512, hop: int = 128) -> tuple[int, int]:
    """librosa ``effects.trim`` bounds: frames (centred, zero padded) whose RMS is within ``top_db`` of the loudest
    frame; returns (start, end) samples (all-zero audio counts as loud everywhere, as in librosa)."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return 0, 0
    xp = np.pad(x, (frame // 2, frame // 2))
    n = 1 + max(0, xp.size - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    power = np.mean(xp[np.minimum(idx, xp.size - 1)] ** 2, axis=1)
    db = 10 * np.log10(np.maximum(power, 1e-10)) - 10 * np.log10(max(float(power.max()), 1e-10))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * hop), int(min(x.size, (loud[-1] + 1) * hop))


def trim_prompt(x16: np.ndarray, keep_left_s: float = 0.05, keep_right_s: float = 0.22, step: int = 240,
                sr: int = 16000) -> np.ndarray:
    """The reference's voice-prompt trim before tokenizing: from 0.05 s before the speech, the speech length rounded
    up to 240-sample steps plus 0.27 s in all (zero padded where the audio is shorter)."""
    start, end = nonsilent_span(x16)
    steps = int(np.ceil((end - start) / step))
    begin = start - int(keep_left_s * sr)
    y = x16[begin:] if begin > 0 else np.pad(x16, (-begin, 0))
    out_len = int(steps * step + (keep_left_s + keep_right_s) * sr)
    return y[:out_len] if out_len < y.size else np.pad(y, (0, out_len - y.size))


def build_voice(
    name: str,
    wav: np.ndarray,
    sample_rate: int,
    transcript: str,
    tokenizer: DualTokenizer,
    campplus: CampPlus,
) -> VoiceEntry:
    """Compute a voice entry from a prompt wav and its exact transcript."""
    if not transcript.strip():
        raise ValueError("a voice needs the exact transcript of its prompt audio")
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0 if x.shape[0] < x.shape[1] else 1)
    x16 = peak_normalize(resample(x, sample_rate, 16000))
    # Tokens from the silence-trimmed prompt (as the reference); the prompt mel and CAM++ use the untrimmed audio.
    tokens = tokenizer.tokenize(trim_prompt(x16), 16000)
    if tokens.interleaved.size == 0:
        raise ValueError("prompt audio too short: no complete audio token group")
    x22 = resample(x, sample_rate, 22050)
    mel = cosyvoice_mel(x22).T.numpy().astype(np.float32)
    emb = campplus.embed(x16)
    return VoiceEntry(name, transcript, tokens.vocab_ids, mel, emb)


class VoiceRegistry:
    """Thread-safe registry persisted as one ``.npz`` per voice under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._voices: dict[str, VoiceEntry] = {}
        for f in sorted(self.root.glob("*.npz")):
            entry = self._read(f)
            self._voices[entry.name] = entry

    @staticmethod
    def _read(path: Path) -> VoiceEntry:
        with np.load(str(path), allow_pickle=False) as z:
            return VoiceEntry(
                name=str(z["name"]),
                prompt_text=str(z["prompt_text"]),
                prompt_audio_ids=[int(i) for i in z["prompt_audio_ids"]],
                prompt_mel=np.asarray(z["prompt_mel"], dtype=np.float32),
                embedding=np.asarray(z["embedding"], dtype=np.float32),
            )

    def add(self, entry: VoiceEntry) -> None:
        """Store (or replace) a voice on disk and in memory."""
        if not _NAME_RE.match(entry.name):
            raise ValueError(f"invalid voice name {entry.name!r}: use 1-64 letters, digits, '_' or '-'")
        path = self.root / f"{entry.name}.npz"
        tmp = self.root / f".{entry.name}.tmp.npz"
        np.savez(
            str(tmp),
            name=np.array(entry.name),
            prompt_text=np.array(entry.prompt_text),
            prompt_audio_ids=np.asarray(entry.prompt_audio_ids, dtype=np.int64),
            prompt_mel=np.asarray(entry.prompt_mel, dtype=np.float32),
            embedding=np.asarray(entry.embedding, dtype=np.float32),
        )
        tmp.replace(path)
        with self._lock:
            self._voices[entry.name] = entry

    def register(
        self,
        name: str,
        wav: np.ndarray,
        sample_rate: int,
        transcript: str,
        tokenizer: DualTokenizer,
        campplus: CampPlus,
    ) -> VoiceEntry:
        """Compute and store a voice."""
        entry = build_voice(name, wav, sample_rate, transcript, tokenizer, campplus)
        self.add(entry)
        return entry

    def remove(self, name: str) -> None:
        """Delete a voice; KeyError if unknown."""
        with self._lock:
            if name not in self._voices:
                raise KeyError(name)
            del self._voices[name]
        (self.root / f"{name}.npz").unlink(missing_ok=True)

    def get(self, name: str) -> VoiceEntry:
        """Return a voice; KeyError listing known voices if absent."""
        with self._lock:
            if name not in self._voices:
                raise KeyError(f"unknown voice {name!r}; registered: {', '.join(sorted(self._voices)) or 'none'}")
            return self._voices[name]

    def names(self) -> list[str]:
        """Registered names."""
        with self._lock:
            return sorted(self._voices)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._voices
