"""Stage faults with real processes: a stopped (SIGSTOP) TTS and a killed (SIGKILL) VAD, then their return.

The shared stack keeps serving the other tests, so each test starts its own VAD and TTS processes (the services'
own ``python -m services.<name>``) and an in-process gateway that uses them plus the stack's tokenizer, LLM and
tools.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.__main__ import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.kit.audio import float_to_pcm16, read_wav, resample
from stepaudio.client import Conversation, session_config
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.stack import Stack, free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
RATE = 16000
STORY = "You are a storyteller. Tell long, detailed stories in English."


class Service:
    """One stage as its own process on a fixed port (so it can come back where the gateway expects it)."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name, self.port, self.log = name, free_port(), log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        prefix = f"STEPAUDIO_{self.name.upper()}_"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", prefix + "PORT": str(self.port),
               prefix + "HOST": "127.0.0.1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", f"services.{self.name}"], cwd=ROOT, env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(self.addr, 120, self.proc, self.name)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture()
def stages(tmp_path: Path) -> Iterator[dict[str, Service]]:
    started = {name: Service(name, tmp_path) for name in ("vad", "tts")}
    try:
        for s in started.values():
            s.start()
        yield started
    finally:
        for s in started.values():
            s.stop()


async def gateway_for(stack: Stack, own: dict[str, Service], **overrides: object):
    settings = GatewaySettings(port=0, host="127.0.0.1", log_json=False, log_level="WARNING", conversation_log=False,
                               vad_addr=own["vad"].addr, tokenizer_addr=stack.addr("tokenizer"),
                               llm_addr=stack.addr("llm"), tools_addr=stack.addr("tools"), tts_addr=own["tts"].addr,
                               **overrides)  # type: ignore[arg-type]
    server = build_gateway(settings)
    await server.start()
    return server


async def health(addr: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(addr) as ch:
        try:
            resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=2)
        except grpc.aio.AioRpcError:
            return -1
        return resp.status


async def wait_health(addr: str, status: int, timeout_s: float) -> float:
    t0 = time.monotonic()
    while await health(addr) != status:
        assert time.monotonic() - t0 < timeout_s, f"health never became {status}"
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


def completed(conv: Conversation) -> list[pb.TurnCompleted]:
    return [e.turn_completed for e in conv.result.events if e.WhichOneof("event") == "turn_completed"]


async def test_a_stopped_tts_fails_the_turn_in_bounded_time_and_the_next_turn_works(
    stack: Stack, stages: dict[str, Service]
) -> None:
    gw = await gateway_for(stack, stages, stall_timeout_s=3.0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            conv = Conversation(ch, session_config(RATE, max_reply_tokens=150, system_prompt=STORY))
            conv.send_text("Tell me a long story about a brave knight and a friendly dragon.")
            deadline = time.monotonic() + 60
            while not conv.result.turns or not conv.result.turns[0].audio:
                assert time.monotonic() < deadline, "no reply audio"
                await asyncio.sleep(0.02)
            stages["tts"].signal(signal.SIGSTOP)  # mid-turn: the LLM goes on writing, the TTS answers nothing
            stopped_at = time.monotonic()
            await conv.wait_turns(1, 60)
            ended_after = time.monotonic() - stopped_at
            stages["tts"].signal(signal.SIGCONT)
            conv.send_text("Say hello.")
            await conv.wait_turns(2, 60)
            result = await conv.finish()
    finally:
        await gw.stop(0)
    first, second = [e.turn_completed for e in result.events if e.WhichOneof("event") == "turn_completed"]
    assert first.outcome == pb.TURN_OUTCOME_FAILED, first
    errors = [e for e in result.errors if e.turn_id == first.turn_id]
    assert errors and errors[0].code == "DEADLINE_EXCEEDED" and "tts" in errors[0].message, result.errors
    # The stall bound (3 s) plus the audio already queued for playback when the TTS stopped.
    assert ended_after < 3.0 + first.reply_audio_ms / 1000 + 5.0, ended_after
    assert second.outcome == pb.TURN_OUTCOME_COMPLETED and result.audio


async def test_a_killed_vad_flips_health_and_sessions_hear_again_after_it_returns(
    stack: Stack, stages: dict[str, Service]
) -> None:
    gw = await gateway_for(stack, stages, dependency_check_s=0.5)
    addr = f"127.0.0.1:{gw.port}"
    x, sr = read_wav(DATA / "question.wav")
    question = float_to_pcm16(resample(x, sr, RATE))
    try:
        assert await health(addr) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(addr) as ch:
            conv = Conversation(ch, session_config(RATE))
            mic_stop = asyncio.Event()

            async def mic() -> None:  # a microphone: silence in real time, all the time
                silence = float_to_pcm16(np.zeros(RATE // 50, np.float32))
                while not mic_stop.is_set():
                    conv.send_audio(silence)
                    await asyncio.sleep(0.02)

            feeder = asyncio.create_task(mic())
            await asyncio.sleep(1.0)
            stages["vad"].signal(signal.SIGKILL)
            await wait_health(addr, health_pb2.HealthCheckResponse.NOT_SERVING, 10)
            # Not ready, but alive: kubelet must not restart a gateway because a stage is down.
            assert await health(addr, "liveness") == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(1.0)
            stages["vad"].start()  # back on the same port
            await wait_health(addr, health_pb2.HealthCheckResponse.SERVING, 20)
            await asyncio.sleep(2.0)  # the session reopens its VAD stream on the next audio
            mic_stop.set()
            await feeder
            step = RATE // 50 * 2
            for off in range(0, len(question), step):
                conv.send_audio(question[off:off + step])
                await asyncio.sleep(0.02)
            await conv.wait_turns(1, 60)
            result = await conv.finish()
    finally:
        await gw.stop(0)
    assert any(e.code == "UNAVAILABLE" and "voice activity" in e.message for e in result.errors), result.errors
    [done] = completed(conv)
    assert done.outcome == pb.TURN_OUTCOME_COMPLETED and done.user_text and result.audio
