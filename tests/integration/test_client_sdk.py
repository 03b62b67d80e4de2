"""The client SDK on the real stack: typed events, the sync wrapper, and resuming a session on a new connection."""

from __future__ import annotations

from pathlib import Path

import grpc
from speech_match import says

from stepaudio.client import (
    AudioEvent,
    Conversation,
    SyncConversation,
    TranscriptEvent,
    TurnDone,
    read_wav,
    session_config,
    stream_audio,
)
from stepaudio.stack import Stack

DATA = Path(__file__).parents[1] / "data"


async def test_typed_events_in_order(stack: Stack) -> None:
    pcm, rate = read_wav(DATA / "question.wav")
    async with grpc.aio.insecure_channel(stack.gateway_addr) as ch:
        conv = Conversation(ch, session_config(rate))
        await stream_audio(conv, pcm, rate, realtime=False)
        conv.close()
        events = [e async for e in conv.events()]
    final = [e for e in events if isinstance(e, TranscriptEvent) and e.final]
    assert final and says(final[0].text, (DATA / "question.txt").read_text().strip())
    assert any(isinstance(e, AudioEvent) and e.pcm for e in events)
    done = [e for e in events if isinstance(e, TurnDone)]
    assert done and done[-1].outcome == "TURN_OUTCOME_COMPLETED" and done[-1].timings["time_to_first_audio"] > 0
    assert events.index(final[0]) < events.index(done[-1])


def test_sync_wrapper(stack: Stack) -> None:
    with SyncConversation(stack.gateway_addr, session_config(16000)) as conv:
        conv.send_text("What is the capital of France?")
        turn = conv.wait_turn()
        assert turn.outcome == "TURN_OUTCOME_COMPLETED" and turn.audio and turn.reply_text
    assert conv.result.session_id


async def test_resume_keeps_the_session(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.gateway_addr) as ch:
        conv = Conversation(ch, session_config(16000))
        conv.send_text("My name is Ada. Please remember it.")
        await conv.wait_turns(1, 120)
        sid = conv.result.session_id
    async with grpc.aio.insecure_channel(stack.gateway_addr) as ch2:  # the first connection is gone
        again = await conv.resume(ch2)
        again.send_text("Hello again.")
        await again.wait_turns(1, 120)
        result = await again.finish()
    assert result.session_id == sid
    started = next(e.session_started for e in result.events if e.WhichOneof("event") == "session_started")
    assert started.resumed
