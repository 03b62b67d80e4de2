"""Dual-codebook audio token codec.

Step-Audio writes audio tokens into prompts as ``<audio_X>``: ``X = c`` for a linguistic (vq02) code ``c``
in 0..1023 and ``X = 1024 + c`` for a semantic (vq06) code ``c`` in 0..4095. The LLM vocabulary id of
``<audio_X>`` is ``65536 + X``. Streams are interleaved in groups of 2 linguistic + 3 semantic codes
(16.7 Hz : 25 Hz); a trailing partial group is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

LINGUISTIC_CODEBOOK = 1024
SEMANTIC_CODEBOOK = 4096
SEMANTIC_OFFSET = LINGUISTIC_CODEBOOK
NUM_AUDIO_TOKENS = LINGUISTIC_CODEBOOK + SEMANTIC_CODEBOOK  # 5120
AUDIO_VOCAB_OFFSET = 65536
GROUP_LINGUISTIC = 2
GROUP_SEMANTIC = 3
GROUP_SIZE = GROUP_LINGUISTIC + GROUP_SEMANTIC
TOKENS_PER_SECOND = 125.0 / 3.0  # 25 Hz * 5/3 = 41.67 mixed tokens per second

_AUDIO_RE = re.compile(r"<audio_(\d+)>")


def linguistic_to_x(code: int) -> int:
    """Map a linguistic code (0..1023) to its ``<audio_X>`` index."""
    if not 0 <= code < LINGUISTIC_CODEBOOK:
        raise ValueError(f"linguistic code {code} outside 0..{LINGUISTIC_CODEBOOK - 1}")
    return int(code)


def semantic_to_x(code: int) -> int:
    """Map a semantic code (0..4095) to its ``<audio_X>`` index (1024 + code)."""
    if not 0 <= code < SEMANTIC_CODEBOOK:
        raise ValueError(f"semantic code {code} outside 0..{SEMANTIC_CODEBOOK - 1}")
    return SEMANTIC_OFFSET + int(code)


def x_to_code(x: int) -> tuple[str, int]:
    """Inverse of the above: return ``("linguistic", c)`` or ``("semantic", c)``."""
    if 0 <= x < LINGUISTIC_CODEBOOK:
        return "linguistic", int(x)
    if LINGUISTIC_CODEBOOK <= x < NUM_AUDIO_TOKENS:
        return "semantic", int(x) - SEMANTIC_OFFSET
    raise ValueError(f"audio token index {x} outside 0..{NUM_AUDIO_TOKENS - 1}")


def x_to_vocab_id(x: int) -> int:
    """``<audio_X>`` index -> LLM vocabulary id (65536 + X)."""
    x_to_code(x)
    return AUDIO_VOCAB_OFFSET + int(x)


def vocab_id_to_x(vocab_id: int) -> int:
    """LLM vocabulary id -> ``<audio_X>`` index; raises ValueError for non-audio ids."""
    x = int(vocab_id) - AUDIO_VOCAB_OFFSET
    x_to_code(x)
    return x


def is_audio_vocab_id(vocab_id: int) -> bool:
    """True when ``vocab_id`` is one of the 5120 audio token ids."""
    return AUDIO_VOCAB_OFFSET <= int(vocab_id) < AUDIO_VOCAB_OFFSET + NUM_AUDIO_TOKENS


def encode_text(xs: Iterable[int]) -> str:
    """Render ``<audio_X>`` indices as prompt text."""
    out = []
    for x in xs:
        x_to_code(int(x))
        out.append(f"<audio_{int(x)}>")
    return "".join(out)


def decode_text(text: str) -> list[int]:
    """Parse prompt text made only of ``<audio_X>`` tokens back to indices (whitespace is ignored)."""
    xs: list[int] = []
    pos = 0
    stripped = "".join(text.split())
    for m in _AUDIO_RE.finditer(stripped):
        if m.start() != pos:
            raise ValueError(f"unexpected text {stripped[pos : m.start()]!r} at offset {pos}; expected <audio_X>")
        x = int(m.group(1))
        x_to_code(x)
        xs.append(x)
        pos = m.end()
    if pos != len(stripped):
        raise ValueError(f"unexpected text {stripped[pos:]!r} at offset {pos}; expected <audio_X>")
    return xs


def num_groups(n_linguistic: int, n_semantic: int) -> int:
    """Number of complete [2 linguistic, 3 semantic] groups available."""
    return max(0, min(n_linguistic // GROUP_LINGUISTIC, n_semantic // GROUP_SEMANTIC))


def interleave(linguistic: Sequence[int] | np.ndarray, semantic: Sequence[int] | np.ndarray) -> np.ndarray:
    """Interleave raw codes into ``<audio_X>`` indices, [2 linguistic, 3 semantic] per group.

    Inputs are raw codes (linguistic 0..1023, semantic 0..4095). The trailing partial group is dropped.
    Returns an int64 array of X indices (semantic ones offset by 1024).
    """
    lin = np.asarray(linguistic, dtype=np.int64).reshape(-1)
    sem = np.asarray(semantic, dtype=np.int64).reshape(-1)
    if lin.size and (lin.min() < 0 or lin.max() >= LINGUISTIC_CODEBOOK):
        raise ValueError("linguistic codes must be in 0..1023")
    if sem.size and (sem.min() < 0 or sem.max() >= SEMANTIC_CODEBOOK):
        raise ValueError("semantic codes must be in 0..4095")
    g = num_groups(lin.size, sem.size)
    out = np.empty((g, GROUP_SIZE), dtype=np.int64)
    out[:, :GROUP_LINGUISTIC] = lin[: g * GROUP_LINGUISTIC].reshape(g, GROUP_LINGUISTIC)
    out[:, GROUP_LINGUISTIC:] = sem[: g * GROUP_SEMANTIC].reshape(g, GROUP_SEMANTIC) + SEMANTIC_OFFSET
    return out.reshape(-1)


def deinterleave(xs: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split interleaved ``<audio_X>`` indices back into (linguistic codes, semantic codes).

    Requires a whole number of groups with the [2 linguistic, 3 semantic] pattern.
    """
    arr = np.asarray(xs, dtype=np.int64).reshape(-1)
    if arr.size % GROUP_SIZE:
        raise ValueError(f"interleaved length {arr.size} is not a multiple of {GROUP_SIZE}")
    groups = arr.reshape(-1, GROUP_SIZE)
    lin = groups[:, :GROUP_LINGUISTIC]
    sem = groups[:, GROUP_LINGUISTIC:]
    if lin.size and (lin.min() < 0 or lin.max() >= LINGUISTIC_CODEBOOK):
        raise ValueError("positions 0-1 of each group must be linguistic tokens (X in 0..1023)")
    if sem.size and (sem.min() < SEMANTIC_OFFSET or sem.max() >= NUM_AUDIO_TOKENS):
        raise ValueError("positions 2-4 of each group must be semantic tokens (X in 1024..5119)")
    return lin.reshape(-1).copy(), (sem - SEMANTIC_OFFSET).reshape(-1).copy()


def to_vocab_ids(xs: Sequence[int] | np.ndarray) -> np.ndarray:
    """Vectorised X -> LLM vocabulary id."""
    arr = np.asarray(xs, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_AUDIO_TOKENS):
        raise ValueError("audio token indices must be in 0..5119")
    return arr + AUDIO_VOCAB_OFFSET


def from_vocab_ids(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Vectorised LLM vocabulary id -> X; raises on any non-audio id."""
    arr = np.asarray(ids, dtype=np.int64) - AUDIO_VOCAB_OFFSET
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_AUDIO_TOKENS):
        raise ValueError("ids must be audio token ids in 65536..70655")
    return arr
