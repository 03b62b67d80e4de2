"""Whisper's looping output on short real-speech clips: repeated sentences and phrases collapse to one copy."""

from __future__ import annotations

import pytest

from services.tokenizer.backends.whisper import collapse_repeats, compression_ratio


@pytest.mark.parametrize(("heard", "meant"), [
    ("Turn on the lights. Turn on the lights. Turn on the lights.", "Turn on the lights."),
    ("Please hold. Please hold. Please hold. Please hold. Please hold.", "Please hold."),
    ("Call my mom, call my mom, call my mom", "Call my mom,"),
    ("What time is it in Tokyo right now?", "What time is it in Tokyo right now?"),
    ("I said no no to that", "I said no no to that"),  # one-word repeats are speech, not a loop
    ("The capital of France is Paris.", "The capital of France is Paris."),
    ("", ""),
])
def test_repeats_collapse(heard: str, meant: str) -> None:
    assert collapse_repeats(heard) == meant


def test_compression_ratio_flags_a_loop() -> None:
    assert compression_ratio("Thank you. " * 20) > 2.4
    assert compression_ratio("What is the capital of France? I would like to know it before my trip.") < 2.4


def test_repeats_itself() -> None:
    from services.tokenizer.backends.whisper import repeats_itself

    assert repeats_itself("Side Right Right") and repeats_itself("Right. Right.")
    assert repeats_itself("turn it on, turn it on")
    assert not repeats_itself("Side right.") and not repeats_itself("What is the capital of France?")
    assert not repeats_itself("") and not repeats_itself("right")


@pytest.mark.parametrize(("clip", "speech"), [
    ("/usr/share/sounds/alsa/Noise.wav", False),  # a real recording of noise: Whisper alone hears a sentence
    ("/usr/share/sounds/alsa/Front_Left.wav", True),  # a person, 48 kHz
    ("tests/data/question.wav", True),
])
@pytest.mark.parametrize("rate", [48000, 8000])
def test_speech_gate(clip: str, speech: bool, rate: int) -> None:
    from pathlib import Path

    from services.kit.audio import read_wav, resample
    from services.tokenizer.backends.whisper import hears_speech

    path = Path(clip) if clip.startswith("/") else Path(__file__).parents[2] / clip
    if not path.is_file():
        pytest.fail(f"{path} is missing: apt-get install alsa-utils (.ci/run does)")
    x, src = read_wav(path)
    assert hears_speech(resample(resample(x, src, rate), rate, 16000), 0.4) is speech


def test_restarts() -> None:
    from services.tokenizer.backends.whisper import restarts

    assert restarts("Hello from the platform, this is a second sentence. Hello from the")
    assert restarts("Call my mother. Call my")
    assert not restarts("Hello from the platform.")
    assert not restarts("Yes, yes.")  # one word: a person says that
    assert not restarts("The cat saw the dog.")


def test_within_drops_text_written_into_the_padding() -> None:
    from services.tokenizer.backends.whisper import within

    eot, ts = 50256, 50363  # Whisper tiny.en: end of text, timestamp 0.00; timestamp k is ts + k (0.02 s each)
    ids = [ts + 0, 11, 12, ts + 100, ts + 100, 13, ts + 140, ts + 150, 11, 12, 13, ts + 250, eot]
    assert within(ids, eot, ts, 2.9) == [11, 12, 13]  # the stretch from 3.0 s is past a 2.9 s clip: invented
    assert within(ids, eot, ts, 3.5) == [11, 12, 13, 11, 12, 13]  # inside a longer clip it was said
    assert within([ts, 11, 12, eot], eot, ts, 1.0) == [11, 12]  # a stretch with no closing timestamp
