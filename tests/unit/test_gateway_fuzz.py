"""Bad input never crashes the gateway: hypothesis over every ConverseRequest payload (controller on virtual time).

Any sequence of messages either runs or ends with a clear status (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED,
DEADLINE_EXCEEDED); no INTERNAL status and no INTERNAL error event, whatever the fields hold.
"""

from __future__ import annotations

import asyncio

import grpc
from gateway_fakes import FakeStages, run_virtual
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gateway_session import Client, gateway

from services.kit.errors import StageError
from stepaudio.common.v1 import audio_pb2
from stepaudio.conversation.v1 import conversation_pb2 as pb

ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
text = st.text(max_size=300)
turn_detection = st.builds(pb.TurnDetection, start_threshold=st.floats(-2, 2, width=32), stop_threshold=st.floats(
    -2, 2, width=32), min_speech_ms=ints, pause_ms=ints, endpoint_ms=ints, prefix_padding_ms=ints,
    min_interruption_ms=ints, speculative=st.booleans())
config = st.builds(
    pb.SessionConfig, session_id=st.one_of(st.just(""), text), voice=st.one_of(st.just(""), st.just("joe"), text),
    style=st.one_of(st.just(""), st.just("(happy1)"), text), language=text,
    allowed_tools=st.lists(st.one_of(st.just("wait"), st.just("*"), text), max_size=5),
    input_format=st.builds(audio_pb2.AudioFormat, sample_rate_hz=st.sampled_from([0, 8000, 16000, 44100, 7, -5]),
                           encoding=st.integers(0, 5), channels=st.integers(-1, 3)),
    output_format=st.builds(audio_pb2.AudioFormat, sample_rate_hz=st.sampled_from([0, 22050, 48000, 3])),
    turn_detection=st.one_of(st.none(), turn_detection), tenant=text, consent=st.booleans(),
    max_reply_tokens=ints, system_prompt=text)
payload = st.one_of(
    st.builds(lambda d: pb.ConverseRequest(audio=audio_pb2.AudioChunk(data=d)), st.binary(max_size=2000)),
    st.builds(lambda t: pb.ConverseRequest(text=pb.TextInput(text=t)), text),
    st.builds(lambda ms: pb.ConverseRequest(interrupt=pb.Interrupt(played_ms=ms)), ints),
    st.builds(lambda t, r, th, g, c: pb.ConverseRequest(feedback=pb.Feedback(
        turn_id=t, rating=r, thumbs=th, regenerate=g, comment=c)), text, ints, ints, st.booleans(), text),
    st.builds(lambda t, ms: pb.ConverseRequest(playback=pb.PlaybackPosition(turn_id=t, played_ms=ms)), text, ints),
    st.builds(lambda c: pb.ConverseRequest(config=c), config),  # a second config
    st.just(pb.ConverseRequest()),  # nothing set
)
CLEAR = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
         grpc.StatusCode.DEADLINE_EXCEEDED}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.one_of(config, payload), rest=st.lists(payload, max_size=6))
def test_any_request_sequence_ends_cleanly(first, rest) -> None:
    async def main() -> tuple[Client, BaseException | None]:
        c = Client(gateway(FakeStages()))
        c.queue.get_nowait()  # replace the well-formed config with the generated first message
        c.queue.put_nowait(first if isinstance(first, pb.ConverseRequest) else pb.ConverseRequest(config=first))
        for msg in rest:
            c.queue.put_nowait(msg)
            await asyncio.sleep(0.05)
        c.queue.put_nowait(None)
        try:
            await asyncio.wait_for(c.task, 120)
        except StageError as e:
            return c, e
        return c, None

    c, err = run_virtual(main)
    if err is not None:
        assert err.code in CLEAR, (err.code, err.message)
        assert err.message
    assert all(e.code != "INTERNAL" for e in c.of("error")), c.of("error")
