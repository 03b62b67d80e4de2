"""Codec and interleave properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.stepaudio import audio_tokens as at

lin_codes = st.lists(st.integers(0, 1023), max_size=60)
sem_codes = st.lists(st.integers(0, 4095), max_size=90)


@settings(max_examples=200, deadline=None)
@given(lin_codes, sem_codes)
def test_interleave_roundtrip(lin: list[int], sem: list[int]) -> None:
    xs = at.interleave(lin, sem)
    g = min(len(lin) // 2, len(sem) // 3)
    assert xs.size == 5 * g
    lin2, sem2 = at.deinterleave(xs)
    assert lin2.tolist() == lin[: 2 * g]
    assert sem2.tolist() == sem[: 3 * g]
    for i in range(g):
        grp = xs[5 * i : 5 * i + 5]
        assert all(x < 1024 for x in grp[:2]) and all(1024 <= x < 5120 for x in grp[2:])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5119), max_size=50))
def test_text_and_vocab_roundtrip(xs: list[int]) -> None:
    assert at.decode_text(at.encode_text(xs)) == xs
    ids = at.to_vocab_ids(xs)
    assert all(65536 <= i <= 70655 for i in ids)
    assert at.from_vocab_ids(ids).tolist() == xs


def test_codec_edges() -> None:
    assert at.linguistic_to_x(1023) == 1023
    assert at.semantic_to_x(0) == 1024 and at.semantic_to_x(4095) == 5119
    assert at.x_to_code(1024) == ("semantic", 0)
    assert at.x_to_vocab_id(5119) == 70655
    for bad in (-1, 5120):
        with pytest.raises(ValueError):
            at.x_to_code(bad)
    with pytest.raises(ValueError):
        at.decode_text("<audio_1>hello")
    with pytest.raises(ValueError):
        at.deinterleave([1024, 0, 1025, 1026, 1027])
    assert at.interleave([1, 2, 3], [4, 5, 6, 7]).tolist() == [1, 2, 1028, 1029, 1030]
    assert np.isclose(at.TOKENS_PER_SECOND, 41.6667, atol=1e-3)
