"""The whole gateway controller in one process: fake stages, virtual time, no sockets, no sleeps.

Each test drives ``ConversationServicer.Converse`` as a client would (audio at real-time pace, text, feedback) on
a virtual-time loop, and reads the events with the loop time at which they left the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from gateway_fakes import RATE, FakeConvlog, FakeStages, LlmScript, run_virtual, silence, tone

from services.gateway.server import ConversationServicer
from services.gateway.settings import GatewaySettings
from services.gateway.store import MemoryStore
from services.kit.audio import float_to_pcm16
from services.kit.errors import StageError
from stepaudio.common.v1 import audio_pb2
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.logs.v1 import logs_pb2

# The controller tests are written against the silence timer; the end-of-turn model tests choose their policy.
SETTINGS = dict(log_json=False, conversation_log=False, first_phrase_words=3, output_lead_ms=150,
                turn_policy="silence_timer")


class _Context:
    """What the servicer reads of a grpc.aio.ServicerContext: the call's metadata."""

    def __init__(self, metadata: tuple) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple:
        return self.metadata


class Client:
    """One Converse stream against an in-process servicer; events are (loop time, event)."""

    def __init__(self, servicer: ConversationServicer, metadata: tuple = (), **config: object) -> None:
        cfg = pb.SessionConfig(input_format=audio_pb2.AudioFormat(sample_rate_hz=RATE), **config)  # type: ignore[arg-type]
        self.queue: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        self.queue.put_nowait(pb.ConverseRequest(config=cfg))
        self.events: list[tuple[float, pb.ConverseResponse]] = []
        self.changed = asyncio.Condition()
        self.context = _Context(metadata)
        self.task = asyncio.create_task(self._read(servicer))

    async def _requests(self) -> AsyncIterator[pb.ConverseRequest]:
        while (m := await self.queue.get()) is not None:
            yield m

    async def _read(self, servicer: ConversationServicer) -> None:
        loop = asyncio.get_running_loop()
        async for ev in servicer.Converse(self._requests(), self.context):  # type: ignore[arg-type]
            self.events.append((loop.time(), ev))
            async with self.changed:
                self.changed.notify_all()

    async def speak(self, audio: np.ndarray, chunk_ms: int = 20) -> None:
        pcm = float_to_pcm16(audio)
        step = RATE * chunk_ms // 1000 * 2
        for off in range(0, len(pcm), step):
            self.queue.put_nowait(pb.ConverseRequest(audio=audio_pb2.AudioChunk(data=pcm[off:off + step])))
            await asyncio.sleep(chunk_ms / 1000)

    def send(self, **payload: object) -> None:
        self.queue.put_nowait(pb.ConverseRequest(**payload))  # type: ignore[arg-type]

    def of(self, kind: str) -> list:
        return [getattr(e, kind) for _, e in self.events if e.WhichOneof("event") == kind]

    def times(self, kind: str) -> list[float]:
        return [t for t, e in self.events if e.WhichOneof("event") == kind]

    async def until(self, done: Callable[[], bool], timeout_s: float = 60) -> None:
        async def wait() -> None:
            async with self.changed:
                await self.changed.wait_for(done)

        await asyncio.wait_for(wait(), timeout_s)

    async def wait_turns(self, n: int) -> None:
        await self.until(lambda: len(self.of("turn_completed")) >= n)

    async def wait_audio(self) -> None:
        await self.until(lambda: bool(self.of("audio_out")))

    async def close(self) -> None:
        self.queue.put_nowait(None)
        await asyncio.wait_for(self.task, 60)


def gateway(stages: FakeStages, convlog: object = None, **overrides: object) -> ConversationServicer:
    settings = GatewaySettings(**{**SETTINGS, **overrides})  # type: ignore[arg-type]
    return ConversationServicer(stages, MemoryStore(), settings, convlog)


def one_spoken_turn(servicer: ConversationServicer, speech: np.ndarray, **config: object) -> Client:
    """A session (``config``: SessionConfig fields) says ``speech``, waits for one completed turn, ends the stream."""

    async def main() -> Client:
        c = Client(servicer, **config)
        await c.speak(speech)
        await c.wait_turns(1)
        await c.close()
        return c

    return run_virtual(main)


def test_spoken_turn_speculates_at_the_pause_and_paces_the_audio() -> None:
    stages = FakeStages()
    c = one_spoken_turn(gateway(stages), np.concatenate([silence(500), tone(1000), silence(1500)]))
    [done] = c.of("turn_completed")
    assert done.outcome == pb.TURN_OUTCOME_COMPLETED and done.speculative and done.speculative_discards == 0
    assert done.user_text == "heard 1000 ms"
    assert done.reply_text == "The capital of France is Paris."
    timings = {t.name: round(t.duration_ms, 3) for t in done.timings}
    # Speech ends at 1.5 s; the endpoint (500 ms of silence) comes on the VAD's next frame; the speculative reply
    # started at the pause (200 ms), so its audio is ready when the endpoint commits it.
    assert 500 <= timings["endpoint"] <= 540, timings
    assert timings["time_to_first_audio"] == timings["endpoint"], timings
    [stopped] = c.of("speech_stopped")
    assert 1500 <= stopped.audio_offset_ms <= 1500 + 32  # the first silent 32 ms VAD frame
    # Real-time pace: audio never runs more than output_lead_ms ahead of playback.
    audio_t = c.times("audio_out")
    offsets = [a.audio.offset_ms for a in c.of("audio_out")]
    for t, off in zip(audio_t, offsets, strict=True):
        assert off / 1000 - (t - audio_t[0]) <= 0.15 + 1e-6
    assert sum(len(a.audio.data) for a in c.of("audio_out")) == (4 * 22050 // 4 + 2 * 22050 // 4) * 2  # all of it
    # The eager first phrase: five words, then the rest at the sentence end.
    assert stages.tts_texts == ["The capital of France", "is Paris."]  # not "The capital of"


def test_pause_then_resume_discards_the_speculation_and_hears_the_whole_utterance() -> None:
    stages = FakeStages()
    speech = np.concatenate([silence(300), tone(600), silence(400), tone(600), silence(1500)])
    c = one_spoken_turn(gateway(stages), speech,
                        turn_detection=pb.TurnDetection(pause_ms=150, endpoint_ms=800, speculative=True))
    [done] = c.of("turn_completed")
    assert done.speculative_discards == 1 and done.wasted_ms > 0
    assert done.user_text == "heard 1200 ms"  # both halves
    assert len(stages.llm_requests) == 2  # the discarded speculation and the committed reply
    assert [t.text for t in c.of("transcript") if t.is_final] == ["heard 1200 ms"]  # the discarded one never shows


@pytest.mark.parametrize("prefill", [True, False])
def test_partials_have_the_llm_read_the_prompt_while_the_user_speaks(prefill: bool) -> None:
    stages = FakeStages()
    stages.asr_partials = True
    c = one_spoken_turn(gateway(stages, llm_prefill_partials=prefill, partial_interval_ms=400),
                        np.concatenate([silence(300), tone(1500), silence(1500)]))
    [done] = c.of("turn_completed")
    assert done.outcome == pb.TURN_OUTCOME_COMPLETED and done.user_text == "heard 1500 ms"
    users = [(r.sampling.max_tokens, r.messages[-1].content[0].text) for r in stages.llm_requests]
    heads = [text for n, text in users if n == 1]
    assert users[-1] == (96, "heard 1500 ms")  # the reply
    if prefill:  # one short request per partial: the same prompt up to the words heard so far
        assert heads and all(t.startswith("heard ") and t != "heard 1500 ms" for t in heads), users
        assert all(r.messages[0] == stages.llm_requests[-1].messages[0] for r in stages.llm_requests)
    else:
        assert not heads and len(users) == 1


def test_barge_in_stops_audio_within_one_piece_and_keeps_the_played_part() -> None:
    story = " ".join(f"word{i}." for i in range(40))
    stages = FakeStages(LlmScript(reply=story))
    history: list = []

    async def main() -> tuple[Client, float]:
        gw = gateway(stages)
        c = Client(gw)
        mic = asyncio.create_task(c.speak(silence(4000)))
        c.send(text=pb.TextInput(text="Tell me a story."))
        await c.wait_audio()
        await mic
        speech_at = asyncio.get_running_loop().time()
        await c.speak(np.concatenate([tone(800), silence(1000)]))
        await c.wait_turns(2)
        history.extend(next(iter(gw.sessions.values())).history.messages_kept if gw.sessions else [])
        await c.close()
        return c, speech_at

    c, speech_at = run_virtual(main)
    first, second = c.of("turn_completed")
    assert first.outcome == pb.TURN_OUTCOME_INTERRUPTED
    last_audio = max(t for t, e in c.events if e.WhichOneof("event") == "audio_out" and e.audio_out.turn_id ==
                     first.turn_id)
    # Held at the first voiced frame the VAD scores (32 ms) plus at most one 100 ms piece already queued.
    assert last_audio - speech_at <= 0.14, last_audio - speech_at
    played = first.reply_text.split()
    assert 0 < len(played) < 40 and played == story.split()[: len(played)]
    assert first.reply_audio_ms >= 1000
    assert second.user_text == "heard 800 ms"
    assert history[1] == {"role": "assistant", "text": first.reply_text}


def _speak_over_a_reply(reply: str, speech: np.ndarray, wait_turns: int) -> Client:
    """A text turn whose reply (``reply``) plays, the user says ``speech`` over it (min_interruption_ms 600), the
    client waits for ``wait_turns`` completed turns and ends the stream."""
    stages = FakeStages(LlmScript(reply=reply))

    async def main() -> Client:
        c = Client(gateway(stages), turn_detection=pb.TurnDetection(min_interruption_ms=600))
        mic = asyncio.create_task(c.speak(silence(2000)))
        c.send(text=pb.TextInput(text="Tell me something."))
        await c.wait_audio()
        await mic
        await c.speak(speech)
        if wait_turns:
            await c.wait_turns(wait_turns)
        await c.close()
        return c

    return run_virtual(main)


@pytest.mark.parametrize("speech_ms", [250, 900])
def test_ending_the_stream_while_a_reply_is_held_settles_it(speech_ms: int) -> None:
    """The client half-closes while speaking over a reply (the reply is held for a possible interruption): the
    session still ends, the reply played on (speech too short to interrupt) or interrupted (long enough)."""
    # no silence after the speech: the stream ends mid-speech
    c = _speak_over_a_reply(" ".join(f"word{i}." for i in range(30)), tone(speech_ms), wait_turns=0)
    first = c.of("turn_completed")[0]
    want = pb.TURN_OUTCOME_COMPLETED if speech_ms < 600 else pb.TURN_OUTCOME_INTERRUPTED
    assert first.outcome == want, first


def test_a_short_interruption_lets_the_reply_play_on() -> None:
    reply = " ".join(f"word{i}." for i in range(12))
    c = _speak_over_a_reply(reply, np.concatenate([tone(250), silence(6000)]), wait_turns=1)
    [done] = c.of("turn_completed")
    assert done.outcome == pb.TURN_OUTCOME_COMPLETED
    assert done.reply_text == reply


def test_slow_tool_keeps_the_filler_playing_and_answers_after() -> None:
    stages = FakeStages(LlmScript(reply="All done now.", tool="wait", tool_args={"seconds": 2}))

    async def main() -> Client:
        c = Client(gateway(stages), allowed_tools=["wait"])
        c.send(text=pb.TextInput(text="Please wait two seconds."))
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    [started_t] = c.times("tool_call_started")
    [finished_t] = c.times("tool_call_finished")
    assert finished_t - started_t >= 2.0 - 1e-6
    during = [e.audio_out for t, e in c.events if e.WhichOneof("event") == "audio_out" and started_t < t < finished_t]
    assert sum(len(a.audio.data) for a in during) >= 22050  # the filler and the opening words play meanwhile
    after = " ".join(e.audio_out.text for t, e in c.events if e.WhichOneof("event") == "audio_out" and t > finished_t)
    assert "All done now." in after
    assert [r.name for r in stages.tool_calls] == ["wait"]
    assert c.of("turn_completed")[0].outcome == pb.TURN_OUTCOME_COMPLETED


def test_a_failed_stage_ends_the_turn_with_an_error_and_the_session_goes_on() -> None:
    import grpc

    stages = FakeStages(LlmScript(fail=StageError("llm: model crashed", grpc.StatusCode.UNAVAILABLE)))

    async def main() -> Client:
        c = Client(gateway(stages))
        c.send(text=pb.TextInput(text="Hello?"))
        await c.wait_turns(1)
        stages.script = LlmScript(reply="Hi there.")
        c.send(text=pb.TextInput(text="Hello again?"))
        await c.wait_turns(2)
        await c.close()
        return c

    c = run_virtual(main)
    first, second = c.of("turn_completed")
    assert first.outcome == pb.TURN_OUTCOME_FAILED
    assert [(e.code, e.message) for e in c.of("error")] == [("UNAVAILABLE", "turn failed: llm: model crashed")]
    assert second.outcome == pb.TURN_OUTCOME_COMPLETED and second.reply_text == "Hi there."


def test_regenerate_logs_a_second_reply_to_the_same_turn_and_rating_only_feedback() -> None:
    stages = FakeStages()
    convlog = FakeConvlog()

    async def main() -> Client:
        c = Client(gateway(stages, convlog), consent=True)
        c.send(text=pb.TextInput(text="What is the capital of France?"))
        await c.wait_turns(1)
        first = c.of("turn_completed")[0].turn_id
        c.send(feedback=pb.Feedback(turn_id=first, rating=2, regenerate=True))
        await c.wait_turns(2)
        second = c.of("turn_completed")[1].turn_id
        c.send(feedback=pb.Feedback(turn_id=second, rating=5))
        c.send(feedback=pb.Feedback(turn_id=second, thumbs=1))
        c.send(feedback=pb.Feedback(turn_id=first, regenerate=True, thumbs=7))
        await c.close()
        return c

    c = run_virtual(main)
    first, second = c.of("turn_completed")
    assert second.user_text == first.user_text
    [turn] = convlog.of("turn_recorded")
    [regen] = convlog.of("reply_regenerated")
    assert turn["turn_id"] == first.turn_id
    assert (regen["turn_id"], regen["alternative_index"]) == (first.turn_id, 1)
    fb = convlog.of("feedback")
    assert [(f["turn_id"], f["alternative_index"], f["rating"], f["thumbs"], f["regenerate"]) for f in fb] == [
        (first.turn_id, 0, 2, logs_pb2.THUMBS_UNSPECIFIED, True),
        (first.turn_id, 1, 5, logs_pb2.THUMBS_UNSPECIFIED, False),
        (first.turn_id, 1, 0, logs_pb2.THUMBS_UP, False),
    ]
    assert any("thumbs=7" in e.message for e in c.of("error"))
    [ended] = convlog.of("session_ended")
    assert ended["reason"] == logs_pb2.SESSION_END_REASON_USER_HANGUP and ended["turn_count"] == 1
    assert ended["duration_ms"] > 0


def test_regenerate_from_the_gateway_becomes_a_preference_pair(tmp_path) -> None:
    """The gateway's own conversation-log events (real logger, spool only) make a pair in the RLHF rules."""
    from services.convlog import ConversationLogger, ConvlogSettings
    from services.convlog.producer import read_spooled_events
    from services.rlhf.rules import build_pairs

    convlog = ConversationLogger(ConvlogSettings(spool_dir=tmp_path / "spool", audio_dir=tmp_path / "audio",
                                                 bootstrap_servers="")).start()
    stages = FakeStages(LlmScript(reply="Lyon, I think."))

    async def main() -> Client:
        c = Client(gateway(stages, convlog), consent=True)
        c.send(text=pb.TextInput(text="What is the capital of France?"))
        await c.wait_turns(1)
        stages.script = LlmScript(reply="The capital of France is Paris.")
        c.send(feedback=pb.Feedback(turn_id=c.of("turn_completed")[0].turn_id, rating=1, regenerate=True))
        await c.wait_turns(2)
        c.send(feedback=pb.Feedback(turn_id=c.of("turn_completed")[1].turn_id, thumbs=1))
        await c.close()
        return c

    try:
        c = run_virtual(main)
        assert convlog.flush(10)
        assert convlog.spool is not None
        events = list(read_spooled_events(convlog.spool))
    finally:
        convlog.close()
    first = c.of("turn_completed")[0].turn_id
    kinds = sorted(e.WhichOneof("payload") for e in events)
    assert kinds == ["feedback_given", "feedback_given", "reply_regenerated", "session_ended", "turn_recorded"]
    [pair] = build_pairs([e for e in events if e.turn_id == first])
    assert (pair.chosen.text, pair.rejected.text) == ("The capital of France is Paris.", "Lyon, I think.")


# ---- limits and faults (issue: safe to expose) -----------------------------------------------------------------


def test_audio_faster_than_real_time_is_refused_and_memory_stays_bounded() -> None:
    import grpc

    stages = FakeStages()

    async def main() -> tuple[Client, BaseException | None]:
        gw = gateway(stages, max_audio_burst_ms=5000, max_realtime_factor=2.0)
        c = Client(gw)
        pcm = float_to_pcm16(tone(120_000))  # two minutes of audio, sent as fast as the gateway takes it
        for off in range(0, len(pcm), 640):
            c.send(audio=audio_pb2.AudioChunk(data=pcm[off:off + 640]))
            if off % 64000 == 0:
                await asyncio.sleep(0)
        c.queue.put_nowait(None)
        try:
            await asyncio.wait_for(c.task, 60)
        except StageError as e:
            return c, e
        return c, None

    c, err = run_virtual(main)
    assert isinstance(err, StageError) and err.code == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert "real time" in err.message
    [e] = c.of("error")
    assert e.code == "RESOURCE_EXHAUSTED"


def test_a_hung_tts_ends_the_turn_within_the_stall_timeout_and_the_next_turn_works() -> None:
    stages = FakeStages()
    stages.tts_hang = True

    async def main() -> tuple[Client, float, float]:
        c = Client(gateway(stages, stall_timeout_s=3.0))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        c.send(text=pb.TextInput(text="Hello?"))
        await c.wait_turns(1)
        failed_after = loop.time() - t0
        stages.tts_hang = False
        c.send(text=pb.TextInput(text="Hello again?"))
        await c.wait_turns(2)
        await c.close()
        return c, failed_after, t0

    c, failed_after, _ = run_virtual(main)
    first, second = c.of("turn_completed")
    assert first.outcome == pb.TURN_OUTCOME_FAILED
    assert 3.0 < failed_after < 5.0, failed_after
    assert [e.code for e in c.of("error")] == ["DEADLINE_EXCEEDED"]
    assert "tts" in c.of("error")[0].message
    assert second.outcome == pb.TURN_OUTCOME_COMPLETED and c.of("audio_out")


def test_a_hung_llm_ends_the_turn_within_the_stall_timeout() -> None:
    stages = FakeStages()
    stages.llm_hang_after = 2

    async def main() -> Client:
        c = Client(gateway(stages, stall_timeout_s=2.0))
        c.send(text=pb.TextInput(text="Hello?"))
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    [done] = c.of("turn_completed")
    assert done.outcome == pb.TURN_OUTCOME_FAILED
    assert [(e.code, "llm" in e.message) for e in c.of("error")] == [("DEADLINE_EXCEEDED", True)]


def test_half_close_waits_for_a_stuck_reply_at_most_end_of_input_timeout_s() -> None:
    stages = FakeStages()
    stages.tts_hang = True  # and a stall timeout longer than the wait: only the end-of-input bound ends it

    async def main() -> tuple[Client, float]:
        c = Client(gateway(stages, stall_timeout_s=600.0, end_of_input_timeout_s=20.0))
        c.send(text=pb.TextInput(text="Hello?"))
        await asyncio.sleep(1.0)
        t0 = asyncio.get_running_loop().time()
        await c.close()
        return c, asyncio.get_running_loop().time() - t0

    c, took = run_virtual(main)
    assert 20.0 <= took < 30.0, took
    assert not c.of("turn_completed")  # the stuck reply was cancelled, not reported as done


def test_a_reply_whose_cancel_was_lost_does_not_wait_for_a_commit() -> None:
    """Python 3.11's ``asyncio.wait_for`` can swallow a cancel that lands as its inner future completes; a
    discarded speculation that missed its cancel must still end rather than wait for ever for its commit."""
    from services.gateway.playout import Playout
    from services.gateway.reply import Outcome, Reply

    async def main() -> bool:
        reply = Reply("t1", None, 0.0, Playout(150), speculative=True)

        async def run() -> None:
            try:
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                pass  # the lost cancel
            await reply.until_committed()

        reply.task = asyncio.create_task(run())
        await asyncio.sleep(0)
        reply.cancel(Outcome.DISCARDED)
        done, _ = await asyncio.wait([reply.task], timeout=5.0)
        return bool(done) and reply.task.cancelled()

    assert run_virtual(main)


def test_vad_stream_reopens_after_the_vad_comes_back() -> None:
    stages = FakeStages()
    stages.vad_failures = 3

    async def main() -> Client:
        c = Client(gateway(stages))
        await c.speak(silence(5000))  # the VAD is down: its streams fail; the gateway retries about once a second
        await c.speak(np.concatenate([tone(800), silence(1500)]))
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    assert stages.vad_streams >= 4
    errors = c.of("error")
    assert errors and all(e.code == "UNAVAILABLE" for e in errors) and len(errors) <= 2, errors
    [done] = c.of("turn_completed")
    assert done.user_text == "heard 800 ms" and done.outcome == pb.TURN_OUTCOME_COMPLETED


def test_an_endless_utterance_ends_at_max_utterance_ms() -> None:
    stages = FakeStages()

    async def main() -> Client:
        c = Client(gateway(stages, max_utterance_ms=3000))
        await c.speak(tone(5000))
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    first = c.of("turn_completed")[0]
    assert first.user_text.startswith("heard ") and 3000 <= int(first.user_text.split()[1]) <= 3400


def test_another_tenant_cannot_resume_a_session() -> None:
    import grpc

    stages = FakeStages()

    async def main() -> tuple[str, BaseException | None, int]:
        gw = gateway(stages)
        a = Client(gw, tenant="acme")
        a.send(text=pb.TextInput(text="My secret is 42."))
        await a.wait_turns(1)
        await a.close()
        sid = a.of("session_started")[0].session_id
        b = Client(gw, tenant="evil", session_id=sid)
        b.queue.put_nowait(None)
        try:
            await asyncio.wait_for(b.task, 10)
        except StageError as e:
            return sid, e, 0
        again = Client(gw, tenant="acme", session_id=sid)
        await again.close()
        return sid, None, len(again.events)

    sid, err, _ = run_virtual(main)
    assert isinstance(err, StageError) and err.code == grpc.StatusCode.NOT_FOUND
    assert sid not in err.message


def test_oversized_inputs_are_refused_with_what_to_fix() -> None:
    import grpc
    import pytest

    from services.gateway.config import validate_config

    stages = FakeStages()
    s = GatewaySettings(**SETTINGS)  # type: ignore[arg-type]
    for config, field in [
        (pb.SessionConfig(turn_detection=pb.TurnDetection(endpoint_ms=2**31 - 1)), "endpoint_ms"),
        (pb.SessionConfig(tenant="t" * 1000), "tenant"),
        (pb.SessionConfig(system_prompt="x" * 100_000), "system_prompt"),
        (pb.SessionConfig(allowed_tools=["wait"] * 100), "allowed_tools"),
    ]:
        with pytest.raises(StageError) as info:
            validate_config(config, s, stages.tool_specs, stages.voices)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.message

    async def main() -> Client:
        c = Client(gateway(stages))
        c.send(text=pb.TextInput(text="x" * 10_000))
        c.send(feedback=pb.Feedback(comment="y" * 10_000))
        c.send(text=pb.TextInput(text="Still here?"))
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    assert [e.code for e in c.of("error")] == ["INVALID_ARGUMENT", "INVALID_ARGUMENT"]
    assert c.of("turn_completed")[0].user_text == "Still here?"


def test_a_hung_asr_fails_the_turn_after_asr_timeout_s() -> None:
    stages = FakeStages(asr_s=1000.0)

    async def main() -> Client:
        c = Client(gateway(stages, asr_timeout_s=2.0))
        await c.speak(np.concatenate([tone(800), silence(1000)]))
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    [done] = c.of("turn_completed")
    assert done.outcome == pb.TURN_OUTCOME_FAILED
    assert [(e.code, "asr" in e.message) for e in c.of("error")] == [("DEADLINE_EXCEEDED", True)]


# ---- the stepaudio topology: the LLM hears the user's audio as dual tokens -------------------------------------


def user_parts(request) -> list:
    return list(request.messages[-1].content)


def test_audio_tokens_input_sends_the_turn_as_dual_tokens_and_keeps_history_as_text() -> None:
    stages = FakeStages()

    async def main() -> tuple[Client, list]:
        gw = gateway(stages, llm_input="audio_tokens")
        c = Client(gw)
        await c.speak(np.concatenate([silence(500), tone(1000), silence(1500)]))
        await c.wait_turns(1)
        history = list(next(iter(gw.sessions.values())).history.messages_kept)
        c.send(text=pb.TextInput(text="And in writing?"))
        await c.wait_turns(2)
        await c.close()
        return c, history

    c, history = run_virtual(main)
    first, second = c.of("turn_completed")
    [part] = user_parts(stages.llm_requests[0])
    assert part.WhichOneof("part") == "audio_tokens"
    assert list(part.audio_tokens.ids) == list(range(1000 // 40))  # the whole utterance (1 s of voice)
    assert [t.text for t in c.of("transcript") if t.is_final] == ["heard 1000 ms"]  # the client still gets it
    assert first.user_text == "heard 1000 ms" and history[0] == {"role": "user", "text": "heard 1000 ms"}
    assert "tokenize" in {t.name for t in first.timings}
    # A typed turn stays text; the earlier spoken turn is text in the history the LLM sees.
    later = stages.llm_requests[-1]
    assert [p.text for p in user_parts(later)] == ["And in writing?"]
    assert any(p.text == "heard 1000 ms" for m in later.messages for p in m.content)
    assert second.outcome == pb.TURN_OUTCOME_COMPLETED


def test_audio_tokens_input_discards_speculation_and_tokenizes_the_whole_utterance() -> None:
    stages = FakeStages()

    async def main() -> Client:
        c = Client(gateway(stages, llm_input="audio_tokens"),
                   turn_detection=pb.TurnDetection(pause_ms=150, endpoint_ms=800, speculative=True))
        await c.speak(np.concatenate([silence(300), tone(600), silence(400), tone(600), silence(1500)]))
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    [done] = c.of("turn_completed")
    assert done.speculative_discards == 1
    committed = stages.llm_requests[-1]
    assert len(user_parts(committed)[0].audio_tokens.ids) >= 1200 // 40  # both halves, not the first only
    assert done.user_text == "heard 1200 ms"


def test_audio_tokens_input_barge_in_still_cuts_the_reply() -> None:
    story = " ".join(f"word{i}." for i in range(40))
    stages = FakeStages(LlmScript(reply=story))

    async def main() -> Client:
        c = Client(gateway(stages, llm_input="audio_tokens"))
        mic = asyncio.create_task(c.speak(silence(3000)))
        c.send(text=pb.TextInput(text="Tell me a story."))
        await c.wait_audio()
        await mic
        await c.speak(np.concatenate([tone(800), silence(1000)]))
        await c.wait_turns(2)
        await c.close()
        return c

    c = run_virtual(main)
    first, second = c.of("turn_completed")
    assert first.outcome == pb.TURN_OUTCOME_INTERRUPTED
    assert user_parts(stages.llm_requests[-1])[0].WhichOneof("part") == "audio_tokens"
    heard = int(second.user_text.split()[1])
    assert 800 <= heard <= 820  # the interruption (10 ms frames need not align with the 20 ms chunks)


def test_audible_ttfa_leaves_out_the_tts_leading_silence() -> None:
    stages = FakeStages()
    stages.tts_lead_silence_ms = 120

    async def main() -> Client:
        c = Client(gateway(stages))
        await c.speak(np.concatenate([silence(500), tone(1000), silence(1500)]))
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    timings = {t.name: t.duration_ms for t in c.of("turn_completed")[0].timings}
    assert abs(timings["time_to_first_audible"] - timings["time_to_first_audio"] - 120) < 1.0, timings


def test_a_language_the_asr_cannot_hear_is_refused_unless_the_llm_hears_audio() -> None:
    import grpc
    import pytest

    from services.gateway.config import validate_config

    stages = FakeStages()
    config = pb.SessionConfig(language="fr-FR")
    with pytest.raises(StageError) as info:
        validate_config(config, GatewaySettings(**SETTINGS), stages.tool_specs, stages.voices)  # type: ignore[arg-type]
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "fr-FR" in info.value.message
    for ok in (GatewaySettings(**SETTINGS, asr_languages="en,fr"),  # type: ignore[arg-type]
               GatewaySettings(**SETTINGS, llm_input="audio_tokens")):  # type: ignore[arg-type]
        validate_config(config, ok, stages.tool_specs, stages.voices)
    validate_config(pb.SessionConfig(language="en-GB"), GatewaySettings(**SETTINGS), stages.tool_specs,  # type: ignore[arg-type]
                    stages.voices)


# ---- identity: API keys (hashed) and JWTs (JWKS file) ------------------------------------------------------------


def test_api_keys_and_jwts_decide_the_tenant(tmp_path) -> None:
    import json
    import time

    import grpc
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from services.gateway.auth import key_digest

    (tmp_path / "keys.json").write_text(json.dumps([{"tenant": "acme", "sha256": key_digest("k-acme"),
                                                     "name": "web"}]))
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**public_jwk, "kid": "k1", "alg": "RS256"}]}))

    def token(**claims: object) -> str:
        body = {"tenant": "globex", "sub": "u1", "aud": "stepaudio", "exp": int(time.time()) + 600, **claims}
        return jwt.encode(body, private, algorithm="RS256", headers={"kid": "k1"})

    stages = FakeStages()
    convlog = FakeConvlog()
    auth = dict(api_keys_file=str(tmp_path / "keys.json"), jwks_file=str(tmp_path / "jwks.json"),
                jwt_audience="stepaudio")

    async def attempt(metadata: tuple, **config: object) -> tuple[Client, BaseException | None]:
        c = Client(gateway(stages, convlog, **auth), metadata=metadata, **config)
        c.send(text=pb.TextInput(text="Hi."))
        c.queue.put_nowait(None)
        try:
            await asyncio.wait_for(c.task, 30)
        except StageError as e:
            return c, e
        return c, None

    async def main() -> dict[str, tuple[Client, BaseException | None]]:
        return {
            "none": await attempt(()),
            "wrong key": await attempt((("authorization", "Bearer k-nope"),)),
            "key": await attempt((("authorization", "Bearer k-acme"),), consent=True),
            "key, other tenant": await attempt((("authorization", "Bearer k-acme"),), tenant="globex"),
            "jwt": await attempt((("authorization", f"Bearer {token()}"),), consent=True),
            "jwt expired": await attempt((("authorization", f"Bearer {token(exp=int(time.time()) - 10)}"),)),
            "jwt wrong audience": await attempt((("authorization", f"Bearer {token(aud='other')}"),)),
        }

    got = run_virtual(main)
    codes = {name: (err.code if isinstance(err, StageError) else None) for name, (_, err) in got.items()}
    assert codes == {"none": grpc.StatusCode.UNAUTHENTICATED, "wrong key": grpc.StatusCode.UNAUTHENTICATED,
                     "key": None, "key, other tenant": grpc.StatusCode.PERMISSION_DENIED, "jwt": None,
                     "jwt expired": grpc.StatusCode.UNAUTHENTICATED,
                     "jwt wrong audience": grpc.StatusCode.UNAUTHENTICATED}, codes
    tenants = [kw["tenant"] for kw in convlog.of("turn_recorded")]
    assert tenants == ["acme", "globex"]  # from the credential, not the config


def test_tenant_audio_per_minute_quota() -> None:
    import grpc

    stages = FakeStages()

    async def main() -> tuple[Client, BaseException | None]:
        c = Client(gateway(stages, tenant_audio_s_per_min=3.0), tenant="acme")
        try:
            await c.speak(silence(5000))
            c.queue.put_nowait(None)
            await asyncio.wait_for(c.task, 30)
        except StageError as e:
            return c, e
        try:
            await asyncio.wait_for(c.task, 30)
        except StageError as e:
            return c, e
        return c, None

    c, err = run_virtual(main)
    assert isinstance(err, StageError) and err.code == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert "audio per minute" in err.message and err.retry_after_s is not None


def _eot_turn(probability: float | None, text: dict[str, float] | None = None,
              **settings: object) -> tuple[Client, FakeStages]:
    stages = FakeStages()
    stages.eot_probability = probability
    stages.eot_text = text

    async def main() -> Client:
        td = pb.TurnDetection(pause_ms=200, endpoint_ms=800, speculative=True,
                              policy=pb.TURN_POLICY_END_OF_TURN_MODEL)
        c = Client(gateway(stages, end_of_turn_max_wait_ms=2000, **settings), turn_detection=td)
        await c.speak(np.concatenate([silence(500), tone(1000), silence(3000)]))
        await c.wait_turns(1)
        await c.close()
        return c

    return run_virtual(main), stages


def test_end_of_turn_model_commits_a_complete_turn_before_the_silence_timer() -> None:
    c, stages = _eot_turn(0.95)
    [done] = c.of("turn_completed")
    timings = {t.name: t.duration_ms for t in done.timings}
    # pause (200 ms) + the model (30 ms) + the next VAD frame, instead of the 800 ms timer
    assert 200 <= timings["endpoint"] <= 200 + 30 + 2 * 32 + 5, timings
    # it judged the utterance up to the pause: prefix padding (300) + speech (1000) + the pause (200, + a frame)
    assert stages.eot_calls and 1300 <= stages.eot_calls[0] <= 1600, stages.eot_calls
    assert done.outcome == pb.TURN_OUTCOME_COMPLETED and done.speculative  # the speculative reply was committed


def test_end_of_turn_model_waits_longer_when_the_turn_is_incomplete() -> None:
    c, _ = _eot_turn(0.0)
    [done] = c.of("turn_completed")
    timings = {t.name: t.duration_ms for t in done.timings}
    assert 1999 <= timings["endpoint"] <= 2000 + 40, timings  # end_of_turn_max_wait_ms, not 800


def test_words_that_cannot_end_a_turn_make_the_pause_a_hesitation() -> None:
    """The audio model says complete, but the transcript of the speculative reply reads as unfinished: the gateway
    waits halfway between the silence timer and end_of_turn_max_wait_ms (the user goes on after a real
    hesitation) instead of committing."""
    c, stages = _eot_turn(0.95, text={"heard 1000 ms": 0.0})  # FakeAsr's transcript of the tone
    [done] = c.of("turn_completed")
    timings = {t.name: t.duration_ms for t in done.timings}
    assert 1399 <= timings["endpoint"] <= 1400 + 40, timings  # (800 + 2000) / 2
    assert stages.eot_texts == ["heard 1000 ms"]


def test_words_that_can_end_a_turn_leave_the_verdict_to_the_audio_model() -> None:
    c, stages = _eot_turn(0.95, text={"heard 1000 ms": 0.3})
    [done] = c.of("turn_completed")
    timings = {t.name: t.duration_ms for t in done.timings}
    # pause + the slower of (audio model) and (ASR final + text model), well before the 800 ms timer
    assert 200 <= timings["endpoint"] <= 500, timings
    assert stages.eot_texts == ["heard 1000 ms"] and done.speculative


def test_by_default_a_session_ends_its_turn_when_the_models_say_it_is_complete() -> None:
    """No turn_detection in the session: the gateway's defaults (end-of-turn models, pause 100 ms) commit the
    speculative reply on a "complete" verdict, well before the silence timer (endpoint_ms 500)."""
    defaults = GatewaySettings()
    assert defaults.turn_policy == "end_of_turn_model" and defaults.end_of_turn_text_model == "smollm2"
    stages = FakeStages()
    stages.eot_probability = 0.95
    stages.eot_text = {}  # every transcript can end a message

    async def main() -> Client:
        c = Client(gateway(stages, turn_policy=defaults.turn_policy))
        await c.speak(np.concatenate([silence(500), tone(1000), silence(3000)]))
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    [done] = c.of("turn_completed")
    timings = {t.name: t.duration_ms for t in done.timings}
    assert defaults.pause_ms <= timings["endpoint"] < defaults.endpoint_ms, timings
    assert done.speculative and stages.eot_texts and not c.of("error")


def test_a_verdict_ends_the_turn_without_waiting_for_more_audio() -> None:
    """A client that sent its whole question at once (and keeps the stream open) sends no more audio: the verdict
    itself must end the turn, not the next VAD update that never comes."""
    stages = FakeStages()
    stages.eot_probability = 0.95
    stages.eot_text = {}
    stages.eot_s = 0.3  # the verdict comes after the last of the audio has been judged by the VAD

    async def main() -> Client:
        c = Client(gateway(stages, turn_policy="end_of_turn_model"))
        await c.speak(np.concatenate([silence(500), tone(1000), silence(250)]))  # the pause, then nothing
        await c.wait_turns(1)
        await c.close()
        return c

    c = run_virtual(main)
    [done] = c.of("turn_completed")
    assert done.outcome == pb.TURN_OUTCOME_COMPLETED and done.speculative


def test_end_of_turn_model_missing_falls_back_to_the_timer_with_one_error() -> None:
    c, _ = _eot_turn(None)
    [done] = c.of("turn_completed")
    timings = {t.name: t.duration_ms for t in done.timings}
    assert 799 <= timings["endpoint"] <= 840, timings
    errors = c.of("error")
    assert len(errors) == 1 and errors[0].code == "FAILED_PRECONDITION" and "silence timer" in errors[0].message


def test_end_of_turn_policy_refused_when_the_gateway_has_no_model() -> None:
    async def main() -> Client:
        td = pb.TurnDetection(policy=pb.TURN_POLICY_END_OF_TURN_MODEL)
        c = Client(gateway(FakeStages(), end_of_turn_model="off"), turn_detection=td)
        await c.task
        return c

    try:
        run_virtual(main)
    except StageError as e:
        assert e.code.name == "FAILED_PRECONDITION" and "TURN_POLICY_SILENCE_TIMER" in e.message
    else:
        raise AssertionError("the session should have been refused")


@pytest.mark.parametrize(("text", "ready"), [
    ("The capital", False),  # under three words
    ("The capital of", False),  # three words, but a phrase does not end on "of"
    ("The capital of France", True),
    ("Tokyo is currently", True),
    ("12 * 7", True),
    ("Well,", True),  # a clause mark ends a phrase at once
    ("It is a", False),
    ("", False),
])
def test_first_phrase_ends_on_a_word_that_can_end_it(text: str, ready: bool) -> None:
    from services.gateway.session import first_phrase_ready

    assert first_phrase_ready(text, 3) is ready
