"""Phrase chunker: cut streamed text into speakable phrases as early as it is safe to."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?。！？…]+[\"')\]]*(?=\s|$)")
_CLAUSE_END = re.compile(r"[,;:，；：]+(?=\s)")
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|vs|etc|e\.g|i\.e|No|approx)\.$", re.IGNORECASE)


class PhraseChunker:
    """Accumulates text; ``push`` returns phrases that are complete, ``flush`` returns the rest."""

    def __init__(self, min_chars: int = 12, max_chars: int = 160) -> None:
        self.min_chars, self.max_chars = min_chars, max_chars
        self._buf = ""

    def push(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            phrase, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if phrase:
                out.append(phrase)
        return out

    def flush(self) -> list[str]:
        phrase, self._buf = self._buf.strip(), ""
        return [phrase] if phrase else []

    def _find_cut(self) -> int | None:
        for m in _SENTENCE_END.finditer(self._buf):
            # Cut only once whitespace follows (so "2." in "2.5" is never cut) and not after an abbreviation.
            if m.end() < len(self._buf) and not _ABBREV.search(self._buf[: m.end()]):
                return m.end()
        for m in _CLAUSE_END.finditer(self._buf):
            if m.end() >= self.min_chars:
                return m.end()
        if len(self._buf) >= self.max_chars:
            space = self._buf.rfind(" ", 0, self.max_chars)
            return space if space > 0 else self.max_chars
        return None


def split_phrases(text: str, min_chars: int = 12, max_chars: int = 160) -> list[str]:
    """Split a whole text into phrases the same way streaming does."""
    chunker = PhraseChunker(min_chars, max_chars)
    return chunker.push(text) + chunker.flush()
