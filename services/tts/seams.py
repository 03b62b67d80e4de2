"""Seams between the phrases of one streamed reply: a sentence cut early for latency must not halt mid-sentence.

A TTS renders each phrase as if it were a whole utterance: a little silence before it and a sentence-final pause
after it. Where the gateway cut a sentence early (the eager first phrase, a long clause), that pause lands in the
middle of the sentence ("The capital of France ... is Paris."). :class:`SeamTrimmer` holds back each phrase's
silent tail and, at the phrase's end, keeps only as much as the cut deserves:

* the phrase ends a sentence (``. ! ?``): all of it (a real sentence pause);
* it ends at a clause mark (``, ; :``): the seam (this tail and the next phrase's leading silence, cut to
  ``word_gap_ms``) is at most ``comma_pause_ms`` (the TTS's own pause at a comma, measured);
* it ends mid-sentence (no mark): at most ``word_gap_ms``, and the next phrase's leading silence is cut to
  ``word_gap_ms`` too, so the seam sounds like the gap between two words.

Pure: float audio in, float audio out; no I/O.
"""

from __future__ import annotations

import numpy as np

SENTENCE_END = tuple(".!?。！？…\"')]")
CLAUSE_END = tuple(",;:，；：")


def seam_kind(phrase: str) -> str:
    """``sentence`` | ``clause`` | ``cut``: how the phrase's text ends."""
    t = phrase.rstrip()
    if not t or t.endswith(SENTENCE_END):
        return "sentence"
    return "clause" if t.endswith(CLAUSE_END) else "cut"


class SeamTrimmer:
    """Per stream: ``start(phrase)``, ``push(audio)`` for each piece, ``end()`` for the held tail."""

    def __init__(self, rate: int, word_gap_ms: float, comma_pause_ms: float, threshold: float = 0.01) -> None:
        self.rate = rate
        self.word_gap = int(rate * word_gap_ms / 1000)
        self.comma_pause = int(rate * comma_pause_ms / 1000)
        self.threshold = threshold
        self._kind = "sentence"  # how the current phrase ends
        self._after_cut = False  # the previous phrase ended mid-sentence: trim this one's leading silence
        self._lead_pending = False
        self._held = np.zeros(0, np.float32)  # the silent tail so far

    def start(self, phrase: str) -> None:
        self._kind = seam_kind(phrase)
        self._lead_pending = self._after_cut
        self._held = np.zeros(0, np.float32)

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Audio that can go out now (a silent tail stays held until more sound or the phrase's end)."""
        x = np.concatenate([self._held, np.asarray(audio, np.float32)])
        loud = np.flatnonzero(np.abs(x) > self.threshold)
        if self._lead_pending:
            if loud.size == 0:
                self._held = x[-self.word_gap:] if self.word_gap else x[:0]  # still leading silence
                return x[:0]
            x = x[max(0, loud[0] - self.word_gap):]
            loud = loud - loud[0] + min(loud[0], self.word_gap)
            self._lead_pending = False
        if loud.size == 0:
            self._held = x
            return x[:0]
        end = int(loud[-1]) + 1
        self._held = x[end:]
        return x[:end]

    def end(self) -> np.ndarray:
        """The held tail, cut to what the phrase's end deserves."""
        held, self._held = self._held, np.zeros(0, np.float32)
        self._after_cut = self._kind != "sentence"
        if self._lead_pending:  # a phrase that was silence only
            self._lead_pending = False
            return held[:0]
        cap = {"sentence": held.size, "clause": max(self.comma_pause - self.word_gap, 0), "cut": self.word_gap}[
            self._kind]
        return held[:cap]


def longest_inner_silence_ms(audio: np.ndarray, rate: int, threshold: float = 0.01, frame_ms: int = 10) -> int:
    """The longest run of silent ``frame_ms`` frames between the first and the last sound (0 for no sound)."""
    n = max(1, rate * frame_ms // 1000)
    x = np.asarray(audio, np.float32)
    loud = np.abs(x[: x.size // n * n].reshape(-1, n)).max(axis=1) > threshold if x.size >= n else np.zeros(0, bool)
    idx = np.flatnonzero(loud)
    if idx.size == 0:
        return 0
    longest = run = 0
    for v in loud[idx[0] : idx[-1] + 1]:
        run = 0 if v else run + 1
        longest = max(longest, run)
    return longest * frame_ms
