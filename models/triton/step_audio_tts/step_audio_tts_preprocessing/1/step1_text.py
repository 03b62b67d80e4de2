"""Step1 text <-> token helpers shared by the preprocessing, postprocessing and BLS models (copied into each).

Audio tokens: ``<audio_X>`` (X in 0..5119) is LLM id 65536 + X. They are mapped directly, never through the
text tokenizer, so a tokenizer without those added tokens still works. BOS is id 1, EOT/EOS is 3.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

AUDIO_RE = re.compile(r"<audio_(\d+)>")
AUDIO_OFFSET = 65536
AUDIO_COUNT = 5120
BOS_ID = 1
EOT_ID = 3


def encode(tokenizer: Any, text: str, add_bos: bool = True) -> list[int]:
    """Token ids of a templated prompt: text pieces through the tokenizer, <audio_X> -> 65536 + X."""
    ids: list[int] = [BOS_ID] if add_bos else []
    pos = 0
    for m in AUDIO_RE.finditer(text):
        if m.start() > pos:
            ids.extend(tokenizer.encode(text[pos : m.start()], add_special_tokens=False))
        x = int(m.group(1))
        if not 0 <= x < AUDIO_COUNT:
            raise ValueError(f"audio token <audio_{x}> out of range 0..{AUDIO_COUNT - 1}")
        ids.append(AUDIO_OFFSET + x)
        pos = m.end()
    if pos < len(text):
        ids.extend(tokenizer.encode(text[pos:], add_special_tokens=False))
    return ids


def decode(tokenizer: Any, ids: list[int] | np.ndarray) -> str:
    """Text of generated ids; audio ids are rendered as <audio_X>, special tokens dropped."""
    out: list[str] = []
    run: list[int] = []
    for i in (int(x) for x in ids):
        if AUDIO_OFFSET <= i < AUDIO_OFFSET + AUDIO_COUNT:
            if run:
                out.append(tokenizer.decode(run, skip_special_tokens=True))
                run = []
            out.append(f"<audio_{i - AUDIO_OFFSET}>")
        else:
            run.append(i)
    if run:
        out.append(tokenizer.decode(run, skip_special_tokens=True))
    return "".join(out)


def words_list(tokenizer: Any, words: list[str]) -> np.ndarray:
    """TensorRT-LLM stop/bad words tensor [2, n]: row 0 concatenated ids, row 1 end offsets (-1 padded)."""
    flat: list[int] = []
    offsets: list[int] = []
    for w in words:
        ids = encode(tokenizer, w, add_bos=False)
        if not ids:
            continue
        flat.extend(ids)
        offsets.append(len(flat))
    if not flat:
        return np.array([[0], [-1]], dtype=np.int32)
    n = max(len(flat), len(offsets))
    arr = np.full((2, n), -1, dtype=np.int32)
    arr[0, : len(flat)] = flat
    arr[1, : len(offsets)] = offsets
    arr[0, len(flat) :] = 0
    return arr


class IncrementalDecoder:
    """Turns a growing id sequence into text deltas (holds back incomplete UTF-8 / merged pieces)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, new_ids: list[int]) -> str:
        self.ids.extend(int(i) for i in new_ids)
        text = decode(self.tokenizer, self.ids)
        if text.endswith("\ufffd"):
            return ""
        # Decoding the whole sequence keeps word boundaries right; the delta is what was not emitted yet.
        delta = text[len(self.emitted) :]
        self.emitted = text
        return delta
