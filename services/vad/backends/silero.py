"""Silero VAD v5+ run with onnxruntime from the ONNX file inside the ``silero-vad`` wheel (no torch)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.vad.backends.base import VadBackend, VadStream

_CONTEXT = 64  # samples of the previous frame the model expects in front of each 512-sample frame at 16 kHz


def default_model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed (pip install --no-deps silero-vad)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


class _SileroStream(VadStream):
    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)
        self._sr = np.array(16000, dtype=np.int64)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        out = np.empty(len(frames), dtype=np.float32)
        for i, frame in enumerate(frames):
            x = np.concatenate([self._context, frame[None, :].astype(np.float32)], axis=1)
            prob, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
            self._context = x[:, -_CONTEXT:]
            out[i] = float(prob[0, 0])
        return out


class SileroVad(VadBackend):
    """Silero VAD: 512-sample frames (32 ms) at 16 kHz."""

    def __init__(self, model_path: str | None = None, threads: int = 1) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.exists():
            raise FileNotFoundError(f"Silero VAD model not found at {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def new_stream(self) -> VadStream:
        return _SileroStream(self._session)
