"""Phrase chunking, style tags and the tool registry."""

from __future__ import annotations

import json

import pytest

from models.stepaudio.style import parse_style, split_tags
from services.kit.errors import DeadlineExceeded, InvalidArgument, NotFound
from services.tools.registry import default_registry
from services.tts.chunker import PhraseChunker, split_phrases


def test_chunker_cuts_sentences_and_long_clauses() -> None:
    assert split_phrases("Hello there! Paris is the capital. It has 2.1 million people, and Mr. Smith lives there") == [
        "Hello there!", "Paris is the capital.", "It has 2.1 million people,", "and Mr. Smith lives there"]


def test_chunker_streams_token_by_token() -> None:
    c = PhraseChunker()
    out: list[str] = []
    for tok in "The capital of France is Paris. It is big, with many old museums.".split(" "):
        out += c.push(tok + " ")
    assert out == ["The capital of France is Paris.", "It is big, with many old museums."]
    assert c.flush() == []


def test_chunker_waits_for_whitespace_after_a_period() -> None:
    c = PhraseChunker()
    assert c.push("It costs 3.") == []
    assert c.push("5 euros. Next") == ["It costs 3.5 euros."]
    assert c.flush() == ["Next"]


def test_style_tags_ascii_fullwidth_and_chained() -> None:
    tags = parse_style("(高兴1)（粤语）(fast1)")
    assert (tags.emotion, tags.language, tags.speed) == ("高兴1", "粤语", "快速1")
    assert tags.speed_factor > 1
    tags, rest = split_tags("(RAP)(slow2) hello")
    assert tags.music == "RAP" and tags.speed == "慢速2" and rest == "hello"


@pytest.mark.parametrize("bad", ["(grumpy)", "(happy1)(angry1)", "happy1"])
def test_style_rejects_bad_tags(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_style(bad)


async def test_tools_builtin() -> None:
    reg = default_registry()
    result, _ = await reg.execute("calculator", json.dumps({"expression": "12 * 7"}))
    assert result["result"] == 84
    result, _ = await reg.execute("convert_units", json.dumps({"value": 10, "from_unit": "miles", "to_unit": "km"}))
    assert abs(result["result"] - 16.09344) < 1e-6
    result, _ = await reg.execute("convert_units", json.dumps({"value": 100, "from_unit": "c", "to_unit": "f"}))
    assert result["result"] == 212
    result, _ = await reg.execute("current_time", json.dumps({"timezone": "Tokyo"}))
    assert result["timezone"] == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("name", "args", "exc", "words"),
    [
        ("teleport", "{}", NotFound, "calculator"),
        ("calculator", "{not json", InvalidArgument, "not valid JSON"),
        ("calculator", json.dumps({"expr": "1"}), InvalidArgument, "expression"),
        ("calculator", json.dumps({"expression": "__import__('os')"}), InvalidArgument, "unsupported"),
        ("calculator", json.dumps({"expression": "1/0"}), InvalidArgument, "division by zero"),
        ("convert_units", json.dumps({"value": 1, "from_unit": "kg", "to_unit": "km"}), InvalidArgument, "cannot"),
        ("current_time", json.dumps({"timezone": "Mars/Base"}), InvalidArgument, "unknown time zone"),
        # Bounded in time and size: each of these ran for seconds, overflowed or answered INTERNAL before.
        ("calculator", json.dumps({"expression": "round(1, -1000000000)"}), InvalidArgument, "whole n"),
        ("calculator", json.dumps({"expression": "999999**999 * 999999**999"}), InvalidArgument, "too large"),
        ("calculator", json.dumps({"expression": "(-8) ** 0.5"}), InvalidArgument, "not a real number"),
        ("calculator", json.dumps({"expression": "exp(100000)"}), InvalidArgument, "too large"),
        ("calculator", json.dumps({"expression": "sqrt(-1)"}), InvalidArgument, "not defined"),
        ("calculator", json.dumps({"expression": "1e308 * 10"}), InvalidArgument, "too large"),
        ("calculator", json.dumps({"expression": "round(1, 2, 3)"}), InvalidArgument, "one or two"),
    ],
)
async def test_tools_bad_calls(name: str, args: str, exc: type, words: str) -> None:
    with pytest.raises(exc) as info:
        await default_registry().execute(name, args)
    assert words in info.value.message


async def test_tool_timeout() -> None:
    with pytest.raises(DeadlineExceeded):
        await default_registry().execute("wait", json.dumps({"seconds": 1}), timeout_s=0.05)


def test_diagnostic_tools_are_off_by_default() -> None:
    from services.tools.settings import ToolsSettings

    assert ToolsSettings().enable_diagnostic_tools is False
    assert "wait" not in {t.name for t in default_registry(diagnostic=False).list()}
