"""The real-time controller with real audio streamed at real-time pace: speculation, barge-in, slow tools, Redis.

The stages are the real services of the ``stack`` fixture. Two tests swap the LLM for a scripted servicer (a
subclass of the real LlmService interface) because they test the gateway's tool handling and history, which a
135M model cannot be relied on to exercise.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from live_audio import RATE, completed, piper_speech, send_realtime, silence
from speech_match import holds, says

from services.gateway.__main__ import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.kit.server import GrpcServer, ServiceSpec
from services.kit.settings import ServiceSettings
from services.vad.backends.silero import SileroVad
from services.vad.detector import DetectorConfig, SpeechDetector
from stepaudio.client import Conversation, session_config
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.llm.v1 import llm_pb2, llm_pb2_grpc
from stepaudio.stack import Stack

DATA = Path(__file__).parents[1] / "data"
STORYTELLER = "You are a storyteller. Tell long, detailed stories in English."


async def start_gateway(stack: Stack, **overrides) -> GrpcServer:
    fields = dict(port=0, host="127.0.0.1", log_json=False, log_level="WARNING", conversation_log=False,
                  vad_addr=stack.addr("vad"), tokenizer_addr=stack.addr("tokenizer"), llm_addr=stack.addr("llm"),
                  tools_addr=stack.addr("tools"), tts_addr=stack.addr("tts"))
    settings = GatewaySettings(**{**fields, **overrides})
    server = build_gateway(settings)
    await server.start()
    return server


@pytest.fixture()
async def gateway(stack: Stack) -> AsyncIterator[GrpcServer]:
    server = await start_gateway(stack)
    yield server
    await server.stop(0)


async def test_pause_then_resume_discards_the_speculative_reply(gateway: GrpcServer) -> None:
    first, second = piper_speech("Please tell me"), piper_speech("what the capital of France is.")
    audio = np.concatenate([silence(500), first, silence(450), second, silence(1500)])
    # Precondition on the audio itself: the VAD sees a pause longer than pause_ms but shorter than endpoint_ms.
    det = SpeechDetector(SileroVad(), RATE, DetectorConfig(min_silence_ms=150))
    events, _ = det.push(audio, last=True)
    assert [e.started for e in events][:3] == [True, False, True], events
    gap = events[2].offset_ms - events[1].offset_ms
    assert 250 <= gap <= 600, gap

    td = pb.TurnDetection(pause_ms=150, endpoint_ms=800, speculative=True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
        conv = Conversation(ch, session_config(RATE, turn_detection=td))
        await send_realtime(conv, audio)
        await conv.wait_turns(1, 60)
        result = await conv.finish()
    turns = completed(result)
    assert len(turns) == 1, turns
    assert turns[0].speculative_discards >= 1
    assert turns[0].wasted_ms > 0
    # The committed reply heard the whole utterance, both sides of the pause.
    heard = turns[0].user_text
    assert holds(heard, "please tell me") and holds(heard, "the capital of France is"), heard
    assert says(heard, "Please tell me what the capital of France is."), heard
    assert result.audio


async def test_barge_in_stops_audio_quickly_and_keeps_only_the_played_part(gateway: GrpcServer) -> None:
    interruption = piper_speech("Stop, tell me one fun fact about the moon instead.")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
        conv = Conversation(ch, session_config(RATE, max_reply_tokens=120, system_prompt=STORYTELLER))
        # A microphone sends audio all the time: silence while the bot talks.
        mic = asyncio.create_task(send_realtime(conv, silence(30000)))
        conv.send_text("Tell me a long story about a brave knight and a friendly dragon.")
        deadline = time.monotonic() + 60
        while not conv.result.turns or not conv.result.turns[0].audio:
            assert time.monotonic() < deadline, "no reply audio"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        mic.cancel()
        speech_start = time.monotonic()
        # the interruption, then silence again for as long as the turn takes (the end-of-turn models may wait)
        mic = asyncio.create_task(send_realtime(conv, np.concatenate([interruption, silence(30000)])))
        await conv.wait_turns(2, 60)
        mic.cancel()
        result = await conv.finish()
    first = completed(result)[0]
    assert first.outcome == pb.TURN_OUTCOME_INTERRUPTED
    first_turn = result.turns[0]
    audio_times = [t for t, e in zip(conv.arrivals, result.events, strict=True)
                   if e.WhichOneof("event") == "audio_out" and e.audio_out.turn_id == first.turn_id]
    stopped_after = audio_times[-1] - speech_start
    assert stopped_after <= 0.2, f"reply audio went on {stopped_after * 1000:.0f} ms into the user's speech"
    full = first_turn.reply_text.split()
    played = first.reply_text.split()
    assert 0 < len(played) < len(full), (first.reply_text, first_turn.reply_text)
    assert played[:-1] == full[: len(played) - 1]
    assert 1000 <= first.reply_audio_ms
    # The interruption became the next turn.
    assert says(completed(result)[1].user_text, "Stop, tell me one fun fact about the moon instead."), (
        completed(result)[1].user_text)


async def test_short_noise_does_not_cancel_the_reply(gateway: GrpcServer) -> None:
    blip = piper_speech("Oh.")
    det = SpeechDetector(SileroVad(), RATE, DetectorConfig())
    events, _ = det.push(np.concatenate([silence(300), blip, silence(600)]), last=True)
    assert len(events) == 2 and events[1].offset_ms - events[0].offset_ms < 400, events
    td = pb.TurnDetection(min_interruption_ms=600)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
        conv = Conversation(ch, session_config(RATE, max_reply_tokens=60, turn_detection=td,
                                               system_prompt=STORYTELLER))
        mic = asyncio.create_task(send_realtime(conv, silence(30000)))
        conv.send_text("Tell me about the sea in three sentences.")
        deadline = time.monotonic() + 60
        while not conv.result.turns or not conv.result.turns[0].audio:
            assert time.monotonic() < deadline, "no reply audio"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        mic.cancel()
        await send_realtime(conv, np.concatenate([blip, silence(2000)]))
        mic = asyncio.create_task(send_realtime(conv, silence(30000)))
        await conv.wait_turns(1, 60)
        mic.cancel()
        result = await conv.finish()
    turns = completed(result)
    assert turns[0].outcome == pb.TURN_OUTCOME_COMPLETED, turns[0]
    assert turns[0].reply_text.strip() == result.turns[0].reply_text.strip()


class ScriptedLlm(llm_pb2_grpc.LlmServiceServicer):
    """An LlmService that follows a script: round 1 calls a tool, round 2 answers; records what it was sent."""

    def __init__(self, tool: str = "wait", args: dict | None = None) -> None:
        self.tool, self.args = tool, args or {"seconds": 2}
        self.requests: list[llm_pb2.GenerateRequest] = []

    async def Generate(self, request, context):  # noqa: N802
        self.requests.append(request)
        has_result = any(m.role == llm_pb2.ROLE_TOOL for m in request.messages)
        if self.tool and not has_result:
            yield llm_pb2.GenerateResponse(text_delta="Let me check that for you. ")
            yield llm_pb2.GenerateResponse(tool_call=llm_pb2.ToolCall(id="c1", name=self.tool,
                                                                      arguments_json=json.dumps(self.args)))
            yield llm_pb2.GenerateResponse(finish=llm_pb2.Finish(reason=llm_pb2.FINISH_REASON_TOOL_CALLS))
            return
        for word in "All done, the wait is over now.".split(" "):
            yield llm_pb2.GenerateResponse(text_delta=word + " ")
        yield llm_pb2.GenerateResponse(finish=llm_pb2.Finish(reason=llm_pb2.FINISH_REASON_STOP))


@pytest.fixture()
async def scripted() -> AsyncIterator[tuple[ScriptedLlm, str]]:
    servicer = ScriptedLlm()
    name = llm_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name
    server = GrpcServer("scripted-llm", ServiceSettings(port=0, host="127.0.0.1", log_level="WARNING"),
                        [ServiceSpec(name, llm_pb2_grpc.add_LlmServiceServicer_to_server, servicer)])
    port = await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_slow_tool_does_not_block_audio(stack: Stack, scripted: tuple[ScriptedLlm, str]) -> None:
    _, addr = scripted
    gw = await start_gateway(stack, llm_addr=addr)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            conv = Conversation(ch, session_config(RATE, allowed_tools=["wait"]))
            conv.send_text("Please wait two seconds.")
            await conv.wait_turns(1, 60)
            result = await conv.finish()
    finally:
        await gw.stop(0)
    times = dict(zip(map(id, result.events), conv.arrivals, strict=True))
    started = next(e for e in result.events if e.WhichOneof("event") == "tool_call_started")
    finished = next(e for e in result.events if e.WhichOneof("event") == "tool_call_finished")
    assert finished.tool_call_finished.error == ""
    t_start, t_end = times[id(started)], times[id(finished)]
    assert t_end - t_start >= 1.9
    audio = [(times[id(e)], e.audio_out) for e in result.events if e.WhichOneof("event") == "audio_out"]
    during = [a for t, a in audio if t_start < t < t_end]
    assert sum(len(a.audio.data) for a in during) > 22050 * 2 * 0.5, "audio stalled while the tool ran"
    after_text = " ".join(a.text for t, a in audio if t > t_end)
    assert "done" in after_text.lower(), after_text
    assert completed(result)[0].outcome == pb.TURN_OUTCOME_COMPLETED


async def test_reconnect_after_gateway_restart_keeps_history(
    stack: Stack, scripted: tuple[ScriptedLlm, str], redis_url: str
) -> None:
    servicer, addr = scripted
    servicer.tool = ""
    gw = await start_gateway(stack, llm_addr=addr, redis_url=redis_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
        conv = Conversation(ch, session_config(RATE))
        conv.send_text("My name is Ada.")
        await conv.wait_turns(1, 60)
        first = await conv.finish()
    await gw.stop(0)  # the gateway goes away; its process memory with it

    gw2 = await start_gateway(stack, llm_addr=addr, redis_url=redis_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw2.port}") as ch:
            conv = Conversation(ch, session_config(RATE, session_id=first.session_id))
            conv.send_text("What is my name?")
            await conv.wait_turns(1, 60)
            second = await conv.finish()
            bad = Conversation(ch, session_config(RATE, session_id="no-such-session"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await bad.finish()
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await gw2.stop(0)
    started = second.events[0].session_started
    assert started.resumed and started.session_id == first.session_id
    sent = [p.text for m in servicer.requests[-1].messages for p in m.content]
    assert "My name is Ada." in sent and "What is my name?" in sent

    import redis

    r = redis.Redis.from_url(redis_url)
    key = f"stepaudio:session:{first.session_id}"
    stored = json.loads(r.get(key))
    assert [m["text"] for m in stored["history"]][:1] == ["My name is Ada."]
    assert 0 < r.ttl(key) <= GatewaySettings().session_ttl_s


async def test_drain_finishes_live_sessions_and_refuses_new_ones(stack: Stack) -> None:
    gw = await start_gateway(stack, drain_grace_s=30)
    addr = f"127.0.0.1:{gw.port}"
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(RATE))
        conv.send_text("Say hello to the team.")
        deadline = time.monotonic() + 30
        while not conv.result.session_id:
            assert time.monotonic() < deadline, "no session started"
            await asyncio.sleep(0.02)
        stopping = asyncio.create_task(gw.stop())  # what SIGTERM does: NOT_SERVING, drain, then stop
        await asyncio.sleep(0.3)
        async with grpc.aio.insecure_channel(addr) as ch2:
            late = Conversation(ch2, session_config(RATE))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await late.finish(30)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await conv.wait_turns(1, 60)
        result = await conv.finish()
    await stopping
    assert result.audio and completed(result)[0].outcome == pb.TURN_OUTCOME_COMPLETED


async def test_feedback_regenerate_and_client_interrupt(gateway: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
        conv = Conversation(ch, session_config(RATE))
        conv.send_text("What is the capital of France?")
        await conv.wait_turns(1, 60)
        first = completed(conv.result)[0]
        conv.send(pb.ConverseRequest(feedback=pb.Feedback(turn_id=first.turn_id, rating=9)))
        conv.send(pb.ConverseRequest(feedback=pb.Feedback(turn_id=first.turn_id, rating=2, regenerate=True)))
        await conv.wait_turns(2, 60)
        conv.send(pb.ConverseRequest(text=pb.TextInput(text="Tell me a long story about the sea.")))
        deadline = time.monotonic() + 60
        while len(conv.result.turns) < 3 or not conv.result.turns[2].audio:
            assert time.monotonic() < deadline, "no audio for the third turn"
            await asyncio.sleep(0.05)
        conv.send(pb.ConverseRequest(interrupt=pb.Interrupt(played_ms=500)))
        await conv.wait_turns(3, 60)
        result = await conv.finish()
    turns = completed(result)
    assert turns[1].user_text == first.user_text  # the regenerated answer is for the same question
    assert any(e.code == "INVALID_ARGUMENT" and "rating=9" in e.message for e in result.errors)
    assert turns[2].outcome == pb.TURN_OUTCOME_INTERRUPTED
