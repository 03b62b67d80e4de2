"""Smart Turn v3.2: an audio end-of-turn model (BSD-2, shipped as ``smart-turn-v3.2-cpu.onnx`` inside the
``pipecat-ai`` wheel, installed ``--no-deps``; loaded here with ONNX Runtime, no pipecat code imported).

Input: the last 8 s of the utterance at 16 kHz (left-padded with zeros), normalised to zero mean and unit
variance, as an 80-bin Whisper log-mel (80 x 800). Output: P(the speaker has finished the turn).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from models.dsp import resample, whisper_log_mel
from models.packaged import package_file

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
SAMPLE_RATE = 16000
WINDOW_S = 8


def find_model() -> Path:
    """The ONNX file inside the installed pipecat-ai package (located without importing the package)."""
    found = package_file("pipecat", f"audio/turn/smart_turn/data/{MODEL_FILE}")
    if found is None:
        raise FileNotFoundError(f"{MODEL_FILE} not found: install the pipecat-ai wheel with --no-deps "
                                "(requirements/nodeps.txt) or give the file's path")
    return found


def features(audio16k: np.ndarray) -> np.ndarray:
    """(80, 800) model input for the last 8 s of ``audio16k``."""
    n = WINDOW_S * SAMPLE_RATE
    x = np.asarray(audio16k, dtype=np.float32).reshape(-1)[-n:]
    x = np.pad(x, (n - x.size, 0))
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return whisper_log_mel(x, 80)[:, : WINDOW_S * 100]


class SmartTurn:
    """``probability(audio, rate) -> P(turn complete)``; thread-safe, one ONNX session."""

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path else find_model()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def probability(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
        x = resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
        feats = features(x)[None]
        with self._lock:
            out = self.session.run(None, {"input_features": feats})
        return float(np.asarray(out[0]).reshape(-1)[0])
