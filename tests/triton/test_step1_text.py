"""The Step1 text helpers used by the TensorRT-LLM python models (tested with a toy tokenizer)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "step1_text", Path(__file__).resolve().parents[2] / "models/trtllm/templates/common/step1_text.py"
)
assert _spec and _spec.loader
step1_text = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step1_text)


class ToyTokenizer:
    """One id per character (id = ord + 10); id 3 is special."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) + 10 for c in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i - 10) for i in ids if i >= 10)


def test_encode_audio_tokens_and_bos() -> None:
    tok = ToyTokenizer()
    ids = step1_text.encode(tok, "<|BOT|>hi<audio_0><audio_5119>x")
    assert ids[0] == 1
    assert ids[-3:] == [65536, 65536 + 5119, ord("x") + 10]
    with pytest.raises(ValueError):
        step1_text.encode(tok, "<audio_5120>")


def test_decode_round_trip_and_special_dropped() -> None:
    tok = ToyTokenizer()
    text = "ab<audio_7><audio_1030>c"
    ids = step1_text.encode(tok, text, add_bos=False)
    assert step1_text.decode(tok, ids + [3]) == text


def test_words_list_format() -> None:
    arr = step1_text.words_list(ToyTokenizer(), ["ab", "c"])
    assert arr.shape == (2, 3) and arr.dtype == np.int32
    assert list(arr[0]) == [ord("a") + 10, ord("b") + 10, ord("c") + 10]
    assert list(arr[1]) == [2, 3, -1]
    assert step1_text.words_list(ToyTokenizer(), []).tolist() == [[0], [-1]]


def test_incremental_decoder() -> None:
    dec = step1_text.IncrementalDecoder(ToyTokenizer())
    pieces = [dec.push([ord(c) + 10]) for c in "hello"] + [dec.push([65536 + 2])]
    assert "".join(pieces) == "hello<audio_2>"
