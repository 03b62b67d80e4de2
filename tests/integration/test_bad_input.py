"""Bad input gets a clear status or error event; the session (where it can) and other sessions go on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from speech_match import says

from stepaudio.client import Conversation, read_wav, session_config, stream_audio
from stepaudio.common.v1 import audio_pb2
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.conversation.v1 import conversation_pb2_grpc
from stepaudio.stack import Stack

DATA = Path(__file__).parents[1] / "data"


Outcome = tuple[list[pb.ConverseResponse], grpc.aio.AioRpcError | None]


async def converse_raw(addr: str, requests: list[pb.ConverseRequest]) -> Outcome:
    async with grpc.aio.insecure_channel(addr, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = conversation_pb2_grpc.ConversationServiceStub(ch)
        events: list[pb.ConverseResponse] = []
        try:
            async for ev in stub.Converse(iter(requests), timeout=60):
                events.append(ev)
        except grpc.aio.AioRpcError as e:
            return events, e
        return events, None


def audio(data: bytes) -> pb.ConverseRequest:
    return pb.ConverseRequest(audio=audio_pb2.AudioChunk(data=data))


def config(**kw) -> pb.ConverseRequest:
    return pb.ConverseRequest(config=session_config(16000, **kw))


async def test_audio_before_config(stack: Stack) -> None:
    _, err = await converse_raw(stack.gateway_addr, [audio(b"\0\0" * 160)])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message must carry 'config'" in err.details()


async def test_unknown_sample_rate(stack: Stack) -> None:
    req = pb.ConverseRequest(config=session_config(11025))
    _, err = await converse_raw(stack.gateway_addr, [req])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "11025" in err.details() and "16000" in err.details()


async def test_second_config_is_rejected(stack: Stack) -> None:
    _, err = await converse_raw(stack.gateway_addr, [config(), config()])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only be sent once" in err.details()


async def test_unknown_voice_and_tool(stack: Stack) -> None:
    _, err = await converse_raw(stack.gateway_addr, [config(voice="nobody")])
    assert err is not None and err.code() == grpc.StatusCode.NOT_FOUND and "joe" in err.details()
    _, err = await converse_raw(stack.gateway_addr, [config(allowed_tools=["teleport"])])
    assert err is not None and err.code() == grpc.StatusCode.NOT_FOUND and "calculator" in err.details()


async def test_unknown_style_tag(stack: Stack) -> None:
    _, err = await converse_raw(stack.gateway_addr, [config(style="(grumpy)")])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT and "grumpy" in err.details()


async def test_oversized_message(stack: Stack) -> None:
    _, err = await converse_raw(stack.gateway_addr, [config(), audio(b"\0" * (9 << 20))])
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_odd_and_empty_chunks_are_reported_and_session_goes_on(stack: Stack) -> None:
    pcm, rate = read_wav(DATA / "question.wav")
    async with grpc.aio.insecure_channel(stack.gateway_addr) as ch:
        conv = Conversation(ch, session_config(rate))
        conv.send_audio(b"\x01\x02\x03")
        conv.send_audio(b"")
        await stream_audio(conv, pcm, rate, realtime=False)
        result = await conv.finish()
    codes = [e.code for e in result.errors]
    assert codes.count("INVALID_ARGUMENT") == 2, result.errors
    assert any("even number of bytes" in e.message for e in result.errors)
    assert any("empty audio chunk" in e.message for e in result.errors)
    assert says(result.transcript, (DATA / "question.txt").read_text()), result.transcript
    assert result.audio


async def test_bad_sessions_do_not_disturb_a_good_one(stack: Stack) -> None:
    async def good() -> str:
        async with grpc.aio.insecure_channel(stack.gateway_addr) as ch:
            conv = Conversation(ch, session_config(16000))
            conv.send_text("Say hello in three words.")
            await conv.wait_turns(1, 120)
            result = await conv.finish()
            assert result.audio and not result.errors
            return result.reply_text

    async def bad(i: int) -> None:
        reqs = [[audio(b"\0\0")], [pb.ConverseRequest(config=session_config(12345))], [config(voice="x")]][i % 3]
        _, err = await converse_raw(stack.gateway_addr, reqs)
        assert err is not None

    results = await asyncio.gather(good(), *(bad(i) for i in range(6)))
    assert results[0].strip()


@pytest.mark.parametrize("text", ["", "   "])
async def test_empty_text_input(stack: Stack, text: str) -> None:
    events, err = await converse_raw(stack.gateway_addr, [config(), pb.ConverseRequest(text=pb.TextInput(text=text))])
    assert err is None
    errors = [e.error for e in events if e.WhichOneof("event") == "error"]
    assert errors and errors[0].code == "INVALID_ARGUMENT"


async def test_a_language_the_embedded_asr_cannot_hear_is_refused(stack: Stack) -> None:
    """Whisper tiny.en would turn French into English gibberish: the session is refused with what to do instead,
    and so is a Transcribe stream that asks the tokenizer for French directly."""
    from stepaudio.tokenizer.v1 import tokenizer_pb2, tokenizer_pb2_grpc

    async with grpc.aio.insecure_channel(stack.gateway_addr) as ch:
        conv = Conversation(ch, session_config(16000, language="fr-FR"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await conv.finish()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "fr-FR" in (info.value.details() or "")

    async def requests():
        yield tokenizer_pb2.TranscribeRequest(config=tokenizer_pb2.TranscribeConfig(
            format=audio_pb2.AudioFormat(sample_rate_hz=16000), language="fr"))
        yield tokenizer_pb2.TranscribeRequest(audio=audio_pb2.AudioChunk(data=b"\x00\x00" * 1600))

    async with grpc.aio.insecure_channel(stack.addr("tokenizer")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in tokenizer_pb2_grpc.TokenizerServiceStub(ch).Transcribe(requests()):
                pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not transcribed" in (info.value.details() or "")
