"""The stepaudio profile as one conversation: `stepaudio models make-tiny` store, Triton serving Step-Audio-Chat
and TTS-3B on the torch Step1 model, the tokenizer (dual tokens + Whisper for history), TTS (flow + HiFT, tokens
from Triton) and the gateway with ``llm_input=audio_tokens``, each its own process.

What Triton received is read from Triton's own request trace (level TENSORS), not from a service's log.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from live_audio import RATE, completed, piper_speech, send_realtime, silence
from speech_match import holds, says

from models.stepaudio.tiny import make_tiny_store
from services.kit.audio import read_wav
from stepaudio.client import Conversation, session_config
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.stack import Stack

DATA = Path(__file__).parents[1] / "data"
AUDIO_TOKEN = re.compile(r"<audio_(\d+)>")


@pytest.fixture(scope="module")
def sa_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    models = make_tiny_store(tmp_path_factory.mktemp("models"))
    run_dir = tmp_path_factory.mktemp("sa-stack")
    trace = run_dir / "triton-trace.json"
    stack = Stack(run_dir=run_dir, profile="stepaudio", model_dir=models,
                  triton_args=[f"--trace-config=triton,file={trace}", "--trace-config=level=TIMESTAMPS",
                               "--trace-config=level=TENSORS", "--trace-config=rate=1",
                               "--trace-config=triton,log-frequency=1"],
                  extra_env={"STEPAUDIO_TTS_MAX_NEW_TOKENS": "60", "STEPAUDIO_TTS_SEED": "0",
                             "STEPAUDIO_STEP1_THREADS": "1"})
    try:
        stack.start(timeout=400)
    except Exception as e:  # noqa: BLE001
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((run_dir / "logs").glob("*.log")))
        pytest.fail(f"the stepaudio stack did not start: {e}\n{logs}")
    yield stack, trace
    stack.stop()


_TRACE_MODEL = re.compile(r'\{"id":(\d+),"model_name":"([^"]+)"')
_TRACE_TENSOR = re.compile(
    r'\{"id":(\d+),"activity":"TENSOR_QUEUE_INPUT","tensor":\{"name":"([^"]+)","data":"(.*?)","shape":"', re.S)


def traced_inputs(trace: Path, model: str) -> list[dict[str, object]]:
    """Input tensors of every request Triton traced for ``model`` (levels TIMESTAMPS + TENSORS, one file per
    trace). Read with patterns, not a JSON parser: Triton writes string tensors unescaped."""
    text = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # Triton writes the files on its own schedule
        text = "".join(f.read_text(errors="replace") for f in sorted(trace.parent.glob(trace.name + "*")))
        if _TRACE_TENSOR.search(text):
            break
        time.sleep(0.2)
    ids = {i for i, name in _TRACE_MODEL.findall(text) if name == model}
    return [{"id": i, "name": name, "data": data} for i, name, data in _TRACE_TENSOR.findall(text) if i in ids]


async def test_spoken_turn_reaches_the_chat_model_as_audio_tokens(sa_stack: tuple[Stack, Path]) -> None:
    stack, trace = sa_stack
    pcm, rate = read_wav(DATA / "question.wav")
    async with grpc.aio.insecure_channel(stack.gateway_addr) as ch:
        conv = Conversation(ch, session_config(rate, max_reply_tokens=40))
        await send_realtime(conv, np.concatenate([silence(300), pcm.astype(np.float32), silence(1500)])
                            if rate == RATE else pcm)
        await conv.wait_turns(1, 120)
        result = await conv.finish(180)
    assert not result.errors, result.errors
    turn = result.last
    assert turn.outcome == "TURN_OUTCOME_COMPLETED", turn
    # The transcript still reaches the client (Whisper, for history) ...
    assert says(turn.transcript, (DATA / "question.txt").read_text().strip()), turn.transcript
    # ... the reply is spoken as 22.05 kHz audio by TTS-3B + flow + HiFT ...
    assert result.sample_rate_hz == 22050
    assert len(turn.audio) > 22050 * 2 * 0.3, len(turn.audio)
    assert turn.reply_text.strip()
    # ... and the chat model heard the user's turn as dual tokens: what Triton received holds <audio_X> runs of
    # about 41.7 tokens per second of speech, linguistic (X < 1024) and semantic (X >= 1024) interleaved 2:3.
    prompts = [str(t["data"]) for t in traced_inputs(trace, "step_audio_chat") if t["name"] == "text_input"]
    assert prompts, "Triton traced no step_audio_chat request"
    xs = [int(x) for x in AUDIO_TOKEN.findall(prompts[-1])]
    speech_s = len(pcm) / rate
    assert 0.5 * 41.7 * speech_s <= len(xs) <= 1.2 * 41.7 * (speech_s + 2), (len(xs), speech_s)
    assert len(xs) % 5 == 0
    groups = np.array(xs).reshape(-1, 5)
    assert (groups[:, :2] < 1024).all() and (groups[:, 2:] >= 1024).all()
    assert "<|BOT|>human\n<audio_" in prompts[-1]
    # TTS-3B ran on Triton too (ids in, audio ids out)
    assert any(t["name"] == "input_ids" for t in traced_inputs(trace, "step_audio_tts"))


async def test_speculation_is_discarded_when_the_user_resumes(sa_stack: tuple[Stack, Path]) -> None:
    stack, _ = sa_stack
    first, second = piper_speech("Please tell me"), piper_speech("what the capital of France is.")
    audio = np.concatenate([silence(500), first, silence(450), second, silence(1500)])
    td = pb.TurnDetection(pause_ms=150, endpoint_ms=800, speculative=True)
    async with grpc.aio.insecure_channel(stack.gateway_addr) as ch:
        conv = Conversation(ch, session_config(RATE, turn_detection=td, max_reply_tokens=30))
        await send_realtime(conv, audio)
        await conv.wait_turns(1, 120)
        result = await conv.finish(180)
    turns = completed(result)
    assert len(turns) == 1, turns
    assert turns[0].speculative_discards >= 1
    heard = turns[0].user_text
    assert holds(heard, "please tell me") and holds(heard, "the capital of France is"), heard
    assert result.audio


async def test_barge_in_stops_the_reply(sa_stack: tuple[Stack, Path]) -> None:
    stack, _ = sa_stack
    interruption = piper_speech("Stop, tell me one fun fact about the moon instead.")
    async with grpc.aio.insecure_channel(stack.gateway_addr) as ch:
        conv = Conversation(ch, session_config(RATE, max_reply_tokens=60))
        mic = asyncio.create_task(send_realtime(conv, silence(30000)))
        conv.send_text("Tell me a long story.")
        deadline = time.monotonic() + 90
        while not conv.result.turns or not conv.result.turns[0].audio:
            assert time.monotonic() < deadline, "no reply audio"
            await asyncio.sleep(0.05)
        mic.cancel()
        speech_start = time.monotonic()
        await send_realtime(conv, np.concatenate([interruption, silence(1500)]))
        await conv.wait_turns(2, 120)
        # Both turns are in. Do not wait for a graceful end: the tiny CPU TTS may still be speaking a long random
        # reply (minutes on a loaded machine), which is not what this test is about.
        conv.cancel()
        result = conv.result
    first = completed(result)[0]
    assert first.outcome == pb.TURN_OUTCOME_INTERRUPTED, first
    audio_times = [t for t, e in zip(conv.arrivals, result.events, strict=True)
                   if e.WhichOneof("event") == "audio_out" and e.audio_out.turn_id == first.turn_id]
    assert audio_times[-1] - speech_start <= 0.5, audio_times[-1] - speech_start
    assert says(completed(result)[1].user_text, "Stop, tell me one fun fact about the moon instead.")
