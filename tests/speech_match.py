"""How tests judge that recognised speech says a given text.

Whisper tiny.en hears synthetic speech a little differently from machine to machine: "France is" becomes
"Francis", "Paris" becomes "aris". Word-set overlap turns each such slip into a missing word; a similarity of the
letters (spaces and punctuation removed) gives partial credit for a near miss and still tells a different sentence
apart. ``bench/bench_asr_similarity.py`` measures both the spread over perturbed renderings of the test sentences
and the score of unrelated sentence pairs; ``SAME_TEXT`` sits between the two.
"""

from __future__ import annotations

import difflib
import re

# Thresholds measured by bench/bench_asr_similarity.py (6 sentences x 8 perturbations, Whisper tiny.en, CPU):
# the same sentence scored at least 0.85 similarity, a sentence on another topic at most 0.43; each half of the
# sentence (10 letters or more) was found with recall at least 0.82, a half of another topic's sentence at most
# 0.75. The old word-overlap check scored the same sentence as low as 0.5.
SAME_TEXT = 0.7
PHRASE = 0.8


def letters(text: str) -> str:
    """Lower-case letters and digits only: the part of a transcript that carries the words."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def similarity(heard: str, said: str) -> float:
    """0..1: how closely ``heard`` spells ``said`` (difflib ratio of :func:`letters`)."""
    a, b = letters(heard), letters(said)
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def recall(heard: str, phrase: str) -> float:
    """0..1: the share of ``phrase``'s letters that ``heard`` holds in the same order (is the phrase in there?)."""
    a, b = letters(heard), letters(phrase)
    if not b:
        return 1.0
    blocks = difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
    return sum(m.size for m in blocks) / len(b)


def holds(heard: str, phrase: str, threshold: float = PHRASE) -> bool:
    return recall(heard, phrase) >= threshold


def says(heard: str, said: str, threshold: float = SAME_TEXT) -> bool:
    return similarity(heard, said) >= threshold
