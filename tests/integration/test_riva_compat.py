"""The Riva-compatible service on the real stages of the ``stack`` fixture, driven by the unmodified
nvidia-riva-client package the way its transcribe_file.py and talk.py scripts drive a Riva server."""

from __future__ import annotations

import wave
from pathlib import Path

import grpc
import numpy as np
import pytest
from speech_match import letters, says

DATA = Path(__file__).parents[1] / "data"
QUESTION = (DATA / "question.txt").read_text().strip()


def _config(riva, path: Path):  # noqa: ANN001, ANN202 - as transcribe_file.py builds it
    config = riva.client.RecognitionConfig(language_code="en-US", max_alternatives=1,
                                           enable_automatic_punctuation=True)
    riva.client.add_audio_file_specs_to_config(config, str(path))
    return config


def test_offline_recognize_a_wav_file(riva_addr: str) -> None:
    import riva.client

    asr = riva.client.ASRService(riva.client.Auth(uri=riva_addr))
    path = DATA / "question.wav"
    response = asr.offline_recognize(path.read_bytes(), _config(riva, path))  # the whole file, header included
    assert says(response.results[0].alternatives[0].transcript, QUESTION), response


def test_streaming_recognize_with_interim_results(riva_addr: str) -> None:
    import riva.client

    asr = riva.client.ASRService(riva.client.Auth(uri=riva_addr))
    path = DATA / "question.wav"
    streaming = riva.client.StreamingRecognitionConfig(config=_config(riva, path), interim_results=True)
    finals, interim = [], []
    with riva.client.AudioChunkFileIterator(str(path), 1600, delay_callback=None) as chunks:
        for response in asr.streaming_response_generator(audio_chunks=chunks, streaming_config=streaming):
            for r in response.results:
                (finals if r.is_final else interim).append(r.alternatives[0].transcript)
    assert len(finals) == 1 and says(finals[0], QUESTION), (finals, interim)


def test_streaming_recognize_gives_one_final_per_utterance(riva_addr: str) -> None:
    """One long stream, two questions 1.5 s apart: a final result at each pause (EndpointingConfig.stop_history),
    as Pipecat's and LiveKit's Riva STT expect; nothing for the silence."""
    import riva.client

    asr = riva.client.ASRService(riva.client.Auth(uri=riva_addr))
    path = DATA / "question.wav"
    with wave.open(str(path)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    audio = pcm + b"\0\0" * int(rate * 1.5) + pcm + b"\0\0" * int(rate * 0.5)
    config = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=rate,
                                           language_code="en-US", max_alternatives=1)
    streaming = riva.client.StreamingRecognitionConfig(config=config, interim_results=True)
    riva.client.add_endpoint_parameters_to_config(streaming, -1, -1.0, 500, -1, -1.0, -1.0)
    chunks = [audio[i:i + 3200] for i in range(0, len(audio), 3200)]
    finals = [r.alternatives[0].transcript for response in asr.streaming_response_generator(
        audio_chunks=iter(chunks), streaming_config=streaming) for r in response.results if r.is_final]
    assert len(finals) == 2 and all(says(f, QUESTION) for f in finals), finals


@pytest.mark.parametrize("rate,channels", [(44100, 1), (48000, 2)])
def test_streaming_a_wav_file_whole_as_transcribe_file_py_does(riva_addr: str, tmp_path: Path, rate: int,
                                                              channels: int) -> None:
    """transcribe_file.py streams the file itself, header in the first chunk, and sets no rate in the config: the
    header gives the format. talk.py's own output (44.1 kHz, speech to the last sample) and a stereo 48 kHz file are
    each heard once, with nothing repeated or left over."""
    import riva.client

    said = "Hello from the platform. This is a second sentence."
    tts = riva.client.SpeechSynthesisService(riva.client.Auth(uri=riva_addr))
    pcm = np.frombuffer(tts.synthesize(said, language_code="en-US", sample_rate_hz=rate).audio, "<i2")
    path = tmp_path / "talk.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm, channels).tobytes())
    asr = riva.client.ASRService(riva.client.Auth(uri=riva_addr))
    streaming = riva.client.StreamingRecognitionConfig(config=riva.client.RecognitionConfig(
        language_code="en-US", max_alternatives=1, enable_automatic_punctuation=True), interim_results=True)
    finals = []
    with riva.client.AudioChunkFileIterator(str(path), 1600, delay_callback=None) as chunks:
        for response in asr.streaming_response_generator(audio_chunks=chunks, streaming_config=streaming):
            finals += [r.alternatives[0].transcript for r in response.results if r.is_final]
    assert len(finals) == 1 and says(finals[0], said), finals
    assert letters(finals[0]).count(letters("Hello from")) == 1, finals


def test_streaming_chunks_that_split_samples(riva_addr: str) -> None:
    """Raw PCM16 in chunks of odd byte counts (a sample split across two requests) is heard as sent."""
    import riva.client

    with wave.open(str(DATA / "question.wav")) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    config = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=rate,
                                           language_code="en-US", max_alternatives=1)
    streaming = riva.client.StreamingRecognitionConfig(config=config, interim_results=False)
    chunks = [pcm[i:i + 1001] for i in range(0, len(pcm), 1001)]
    asr = riva.client.ASRService(riva.client.Auth(uri=riva_addr))
    finals = [r.alternatives[0].transcript for response in asr.streaming_response_generator(
        audio_chunks=iter(chunks), streaming_config=streaming) for r in response.results if r.is_final]
    assert len(finals) == 1 and says(finals[0], QUESTION), finals


def test_synthesize_and_synthesize_online(riva_addr: str, tmp_path: Path) -> None:
    import riva.client

    tts = riva.client.SpeechSynthesisService(riva.client.Auth(uri=riva_addr))
    whole = tts.synthesize("Hello from the platform.", voice_name=None, language_code="en-US",
                           sample_rate_hz=22050)
    assert len(whole.audio) / 2 / 22050 > 0.5
    pieces = [r.audio for r in tts.synthesize_online("Hello from the platform. This is the second sentence.",
                                                     language_code="en-US", sample_rate_hz=16000)]
    assert len(pieces) >= 2 and sum(map(len, pieces)) / 2 / 16000 > 1.5
    out = tmp_path / "talk.wav"  # what talk.py writes
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(pieces))
    assert out.stat().st_size > 44


def test_configs_and_clear_errors(riva_addr: str) -> None:
    import riva.client
    from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc, riva_tts_pb2, riva_tts_pb2_grpc

    with grpc.insecure_channel(riva_addr) as ch:
        asr_cfg = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(ch).GetRivaSpeechRecognitionConfig(
            riva_asr_pb2.RivaSpeechRecognitionConfigRequest())
        assert asr_cfg.model_config[0].parameters["language_code"] == "en-US"
        tts_cfg = riva_tts_pb2_grpc.RivaSpeechSynthesisStub(ch).GetRivaSynthesisConfig(
            riva_tts_pb2.RivaSynthesisConfigRequest())
        assert any(c.parameters["voice_name"] == "joe" for c in tts_cfg.model_config)
    asr = riva.client.ASRService(riva.client.Auth(uri=riva_addr))
    bad = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.FLAC, sample_rate_hertz=16000,
                                        language_code="en-US")
    with pytest.raises(grpc.RpcError) as err:
        asr.offline_recognize(b"fLaC" + b"\0" * 100, bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "LINEAR_PCM" in err.value.details()
    fr = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000,
                                       language_code="fr-FR")
    with pytest.raises(grpc.RpcError) as err:
        asr.offline_recognize(b"\0\0" * 1600, fr)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "en-US" in err.value.details()
