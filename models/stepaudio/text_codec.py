"""Step1 text <-> token ids for the torch Step1 models (TTS-3B prompts, Step-Audio-Chat on the torch Triton model).

Which codec a checkpoint directory uses, first match wins:

1. ``config.json`` key ``"stepaudio_text_encoder": {"type": "bytes", "offset": N}``: UTF-8 bytes + N. Only tiny
   test checkpoints carry it (their ``tokenizer.model`` is a placeholder); the released configs have no such key.
2. ``tokenizer.model`` through ``sentencepiece``.
3. ``tokenizer.json`` through ``tokenizers``.

Templated chat prompts (:func:`encode_prompt`) also hold the Step1 special tokens ``<|BOT|>`` (4) and ``<|EOT|>``
(3) and audio tokens ``<audio_X>`` (65536 + X); those are mapped directly, never through the text codec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from models.stepaudio.audio_tokens import AUDIO_VOCAB_OFFSET
from models.stepaudio.step1 import BOS_ID, BOT_ID, EOT_ID

AUDIO_COUNT = 5120
SPECIAL = {"<|BOT|>": BOT_ID, "<|EOT|>": EOT_ID}
_PIECE_RE = re.compile(r"<\|BOT\|>|<\|EOT\|>|<audio_(\d+)>")


class TextCodec(Protocol):
    """Plain text <-> ids (no BOS, no special tokens)."""

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; ids that are not text are skipped."""
        ...


class ByteCodec:
    """UTF-8 bytes + ``offset``: the documented text codec of tiny test checkpoints."""

    def __init__(self, offset: int) -> None:
        if not 5 <= offset <= AUDIO_VOCAB_OFFSET - 256:
            raise ValueError(f"byte encoder offset {offset} must be in 5..{AUDIO_VOCAB_OFFSET - 256}")
        self.offset = offset

    def encode(self, text: str) -> list[int]:
        return [self.offset + b for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        raw = bytes(i - self.offset for i in ids if self.offset <= i < self.offset + 256)
        return raw.decode("utf-8", errors="replace")


class _SentencePieceCodec:
    def __init__(self, path: Path) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(path))

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.sp.encode(text, out_type=int)]

    def decode(self, ids: Sequence[int]) -> str:
        n = self.sp.get_piece_size()
        return str(self.sp.decode([int(i) for i in ids if 0 <= i < n and i not in (BOS_ID, EOT_ID, BOT_ID)]))


class _HfTokenizerCodec:
    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode([int(i) for i in ids if i < AUDIO_VOCAB_OFFSET], skip_special_tokens=True))


def load_text_codec(model_dir: str | Path) -> TextCodec:
    """The text codec of a Step1 checkpoint directory (see the module docstring for the order)."""
    d = Path(model_dir)
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    spec = cfg.get("stepaudio_text_encoder")
    if spec:
        if spec.get("type") != "bytes":
            raise ValueError(f"{d / 'config.json'}: stepaudio_text_encoder.type must be 'bytes'")
        return ByteCodec(int(spec.get("offset", 256)))
    sp_model = d / "tokenizer.model"
    if sp_model.is_file():
        try:
            return _SentencePieceCodec(sp_model)
        except ImportError:
            if not (d / "tokenizer.json").is_file():
                raise RuntimeError(f"{sp_model} needs the sentencepiece package: pip install sentencepiece") from None
    if (d / "tokenizer.json").is_file():
        return _HfTokenizerCodec(d / "tokenizer.json")
    raise FileNotFoundError(f"missing {sp_model}: the Step1 text tokenizer")


def encode_prompt(codec: TextCodec, text: str, add_bos: bool = True) -> list[int]:
    """Ids of a templated prompt: ``<|BOT|>``/``<|EOT|>`` and ``<audio_X>`` mapped directly, text by ``codec``."""
    ids: list[int] = [BOS_ID] if add_bos else []
    pos = 0
    for m in _PIECE_RE.finditer(text):
        if m.start() > pos:
            ids.extend(codec.encode(text[pos : m.start()]))
        if m.group(1) is not None:
            x = int(m.group(1))
            if not 0 <= x < AUDIO_COUNT:
                raise ValueError(f"audio token <audio_{x}> out of range 0..{AUDIO_COUNT - 1}")
            ids.append(AUDIO_VOCAB_OFFSET + x)
        else:
            ids.append(SPECIAL[m.group(0)])
        pos = m.end()
    if pos < len(text):
        ids.extend(codec.encode(text[pos:]))
    return ids


def is_audio_id(i: int) -> bool:
    return AUDIO_VOCAB_OFFSET <= i < AUDIO_VOCAB_OFFSET + AUDIO_COUNT


class IncrementalText:
    """Generated ids -> text deltas: audio ids as ``<audio_X>``, a split UTF-8 character held back."""

    def __init__(self, codec: TextCodec) -> None:
        self.codec = codec
        self.run: list[int] = []  # text ids since the last audio id
        self.emitted = 0  # characters of decode(run) already returned

    def push(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        for i in ids:
            if is_audio_id(i):
                out.append(self.flush())
                out.append(f"<audio_{i - AUDIO_VOCAB_OFFSET}>")
            else:
                self.run.append(int(i))
        text = self.codec.decode(self.run)
        if text.endswith("\ufffd"):  # an incomplete character: wait for its other bytes
            text = text.rstrip("\ufffd")
        out.append(text[self.emitted :])
        self.emitted = max(self.emitted, len(text))
        return "".join(out)

    def flush(self) -> str:
        text = self.codec.decode(self.run)[self.emitted :]
        self.run, self.emitted = [], 0
        return text
