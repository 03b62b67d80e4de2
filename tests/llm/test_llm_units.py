"""Unit tests: chat templates, tool-call parsing, request validation, endpoint order."""

from __future__ import annotations

import json

import pytest

from services.kit.errors import InvalidArgument
from services.llm.backends.triton import TritonBackend
from services.llm.generator import Generator
from services.llm.settings import LlmSettings
from services.llm.templates import SMOLLM2, STEP1, render
from services.llm.toolcalls import ToolCallParser, parse_call
from stepaudio.common.v1 import tokens_pb2
from stepaudio.llm.v1 import llm_pb2


def msg(role: int, text: str = "", audio: list[int] | None = None) -> llm_pb2.ChatMessage:
    m = llm_pb2.ChatMessage(role=role)
    if text:
        m.content.add(text=text)
    if audio:
        m.content.add(audio_tokens=tokens_pb2.AudioTokens(ids=audio))
    return m


def test_smollm2_template() -> None:
    p = render([msg(llm_pb2.ROLE_SYSTEM, "Be brief."), msg(llm_pb2.ROLE_USER, "Hi")], [], SMOLLM2)
    assert p == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_step1_template_with_audio_tokens_and_default_system() -> None:
    p = render([msg(llm_pb2.ROLE_USER, "Listen: ", audio=[0, 1024, 5119])], [], STEP1)
    assert p == (
        "<|BOT|>system\nYou are a helpful assistant.<|EOT|>"
        "<|BOT|>human\nListen: <audio_0><audio_1024><audio_5119><|EOT|>"
        "<|BOT|>assistant\n"
    )


def test_template_errors() -> None:
    with pytest.raises(InvalidArgument, match="text only"):
        render([msg(llm_pb2.ROLE_USER, audio=[3])], [], SMOLLM2)
    with pytest.raises(InvalidArgument, match="0..5119"):
        render([msg(llm_pb2.ROLE_USER, audio=[6000])], [], STEP1)
    with pytest.raises(InvalidArgument, match="empty"):
        render([], [], SMOLLM2)
    with pytest.raises(InvalidArgument, match="role"):
        render([llm_pb2.ChatMessage()], [], SMOLLM2)


def test_tools_and_tool_history_rendered() -> None:
    tools = [
        llm_pb2.ToolDefinition(
            name="get_time",
            description="Current time in a city.",
            parameters_json_schema=json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}),
        )
    ]
    assistant = msg(llm_pb2.ROLE_ASSISTANT)
    assistant.tool_calls.add(id="c0", name="get_time", arguments_json='{"city": "Paris"}')
    tool = msg(llm_pb2.ROLE_TOOL, "12:00")
    tool.tool_call_id = "c0"
    p = render([msg(llm_pb2.ROLE_USER, "time in Paris?"), assistant, tool], tools, SMOLLM2)
    assert "get_time(city: string): Current time in a city." in p
    assert '<tool_call>{"name": "get_time", "arguments": {"city": "Paris"}}</tool_call>' in p
    assert '<|im_start|>user\n<tool_response>{"tool_call_id": "c0", "content": "12:00"}</tool_response>' in p
    assert p.endswith("<|im_start|>assistant\n")


def feed_all(parser: ToolCallParser, pieces: list[str]) -> tuple[str, list]:
    text, calls = "", []
    for piece in pieces:
        for ev in parser.feed(piece):
            text += ev.text
            calls += [ev.tool_call] if ev.tool_call else []
    for ev in parser.finish():
        text += ev.text
        calls += [ev.tool_call] if ev.tool_call else []
    return text, calls


def test_tool_call_split_across_deltas() -> None:
    raw = 'Sure. <tool_call>{"name": "get_time", "arguments": {"city": "Paris"}}</tool_call> Done'
    pieces = [raw[i : i + 3] for i in range(0, len(raw), 3)]
    text, calls = feed_all(ToolCallParser(allowed={"get_time"}), pieces)
    assert text == "Sure.  Done"
    assert [(c.name, json.loads(c.arguments_json)) for c in calls] == [("get_time", {"city": "Paris"})]


def test_text_released_early_and_lookalikes_kept() -> None:
    p = ToolCallParser()
    assert [e.text for e in p.feed("Hello <to")] == ["Hello "]
    assert "".join(e.text for e in p.feed("day is a < b")) == "<today is a < b"
    assert [e.text for e in p.feed(" <")] == [" "]  # "<" could start a tool call: held back
    assert [e.text for e in p.finish()] == ["<"]


def test_unterminated_call_at_end_and_lenient_json() -> None:
    text, calls = feed_all(ToolCallParser(), ["<tool_call> {'name': 'x', 'arguments': {'a': 1,},}"])
    assert text == "" and calls[0].name == "x" and json.loads(calls[0].arguments_json) == {"a": 1}
    assert parse_call('{"name": "x", "arguments": "{\\"a\\": 2}"}') == ("x", {"a": 2})
    assert parse_call('{"function": {"name": "y", "parameters": {}}}') == ("y", {})


def test_unknown_tool_and_garbage_dropped() -> None:
    parser = ToolCallParser(allowed={"get_time"})
    text, calls = feed_all(
        parser, ['<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>ok<tool_call>nope</tool_call>']
    )
    assert text == "ok" and not calls and parser.dropped == 2


def test_sampling_validation_and_defaults() -> None:
    gen = Generator(backend=None, settings=LlmSettings())  # type: ignore[arg-type]
    req = llm_pb2.GenerateRequest(messages=[msg(llm_pb2.ROLE_USER, "hi")])
    p = gen.params(req)
    assert (p.max_tokens, p.temperature, p.top_p) == (256, 0.7, pytest.approx(0.9))
    assert "<|im_end|>" in p.stop_words
    req.sampling.greedy = True
    req.sampling.stop.append("END")
    p = gen.params(req)
    assert p.temperature == 0 and p.top_k == 1 and "END" in p.stop_words
    req.tools.add(name="t")
    assert "</tool_call>" in gen.params(req).stop_words
    for field, value in (("max_tokens", 100000), ("temperature", -1.0), ("top_p", 2.0), ("top_k", -1)):
        bad = llm_pb2.GenerateRequest()
        setattr(bad.sampling, field, value)
        with pytest.raises(InvalidArgument, match=field):
            gen.params(bad)
    step = Generator(backend=None, settings=LlmSettings(profile="stepaudio"))  # type: ignore[arg-type]
    assert step.model == "step_audio_chat" and step.params(req).end_id == 3


def test_round_robin_and_down_endpoints_last() -> None:
    b = TritonBackend(["a:1", "b:1", "c:1"])
    firsts = [b.order()[0].url for _ in range(6)]
    assert firsts == ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]
    b.endpoints[0].down_until = 1e18
    for _ in range(3):
        order = [e.url for e in b.order()]
        assert order[-1] == "a:1" and len(order) == 3
