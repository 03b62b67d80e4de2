"""Benchmark anchor: time to first reply audio of a stock Pipecat 1.14 voice pipeline on this machine.

What it measures: spoken questions are answered by a real Pipecat cascade built the way Pipecat's own examples build
one — Silero VAD (stop_secs 0.2) in the user context aggregator, Pipecat's default turn stop strategy (the bundled
Smart Turn v3 model), Whisper tiny.en through faster-whisper (``WhisperSTTService``, segmented on the VAD), an
OpenAI-compatible LLM server (``OpenAILLMService``, streaming) and Piper (``PiperTTSService``'s synthesis, with
Pipecat's default streaming sentence aggregation). The audio is fed as a microphone would: 20 ms frames at wall-clock
pace, then silence until the reply has been spoken. For each clip it reports

    ttfa_ms          first non-empty TTS audio frame at the end of the pipeline - the push of the frame holding the
                     caller's end-of-speech sample (end_ms)
    audible_ttfa_ms  the same to the first audible sample (|x| > 0.01) of the reply
    reply_audio_s    seconds of reply audio; inner_silence_ms: longest run of |x| <= 0.01 between the first and the
                     last audible reply sample
    transcript       the TranscriptionFrame text; reply_text: the LLM's streamed text
    llm_responses    replies the LLM started (more than one: it answered part of the question first)

Why it runs in its own environment: Pipecat and its dependencies (its onnxruntime, faster-whisper and piper-tts
pins) do not fit the project's virtual environment, so this script lives in ``.cache/pipecat`` and imports nothing
from the project; the caller talks to it over stdin/stdout only:

    .cache/pipecat/bin/python bench/pipecat_anchor.py --llm-url http://127.0.0.1:PORT/v1 --whisper-dir DIR \\
        --piper-model X.onnx --piper-config X.onnx.json [--stop-secs 0.2] [--system-prompt TEXT] [--max-tokens 96]

It prints ``{"ready": true}`` once the models are loaded, then reads one JSON line per conversation,
``{"wav": "/path/clip.wav", "end_ms": 1234.0}``, runs a fresh pipeline (new context with the system prompt) and
prints one JSON result line. EOF on stdin ends it. Logs go to stderr; stdout carries only these JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TextIO

import numpy as np
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService, WhisperSTTSettings
from pipecat.transcriptions.language import Language
from pipecat.workers.runner import WorkerRunner
from piper import PiperVoice

IN_RATE = 16000  # what the pipeline's input runs at (PipelineParams' default audio_in_sample_rate)
FRAME_SAMPLES = IN_RATE * 20 // 1000  # one 20 ms microphone frame
FRAME_S = FRAME_SAMPLES / IN_RATE
AUDIBLE = 327  # |x| > 0.01 of full scale, in int16
REPLY_TIMEOUT_S = 30.0  # after the clip ends
STOP_TIMEOUT_S = 15.0  # for the pipeline to wind down after the reply
DEFAULT_SYSTEM_PROMPT = "You are a helpful voice assistant. Reply in English with one short sentence."
LLM_MODEL = "smollm2"  # the server ignores the name


class SharedWhisperSTTService(WhisperSTTService):
    """Pipecat's faster-whisper service, loading each model once per process instead of once per pipeline."""

    _models: ClassVar[dict[tuple[str, str, str], Any]] = {}
    _settings: WhisperSTTSettings

    def _load(self) -> None:
        key = (str(self._settings.model), self._device, self._compute_type)
        if key in self._models:
            self._model = self._models[key]
            return
        super()._load()  # Pipecat's loader: WhisperModel(...) plus its language check
        self._models[key] = self._model


class LocalPiperTTSService(PiperTTSService):
    """Pipecat's Piper service on an already loaded local voice.

    ``PiperTTSService.__init__`` only takes a voice name, downloads it into a cache folder if missing and loads
    ``<dir>/<name>.onnx`` with the config beside it. This sets the service up exactly as that constructor does
    (start/stop frames pushed by the base class, default sentence aggregation) but with a voice loaded once from the
    given model and config files; synthesis is ``PiperTTSService.run_tts``, unchanged.
    """

    def __init__(self, *, voice: PiperVoice, voice_name: str, **kwargs: Any) -> None:
        TTSService.__init__(
            self,
            push_start_frame=True,
            push_stop_frames=True,
            settings=PiperTTSService.Settings(model=None, voice=voice_name, language=None),
            **kwargs,
        )
        self._voice = voice


class MicSource(FrameProcessor):
    """Head of the pipeline, standing in for a transport's input: pushes microphone frames downstream."""

    def __init__(self) -> None:
        super().__init__(name="MicSource")
        self.started = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self.started.set()

    async def speak(self, pcm: bytes) -> None:
        await self.push_frame(InputAudioRawFrame(audio=pcm, sample_rate=IN_RATE, num_channels=1))


@dataclass
class Reply:
    """What reached the end of the pipeline (where an output transport would play it), with arrival times."""

    chunks: list[np.ndarray] = field(default_factory=list)
    sample_rate: int = 0
    first_audio_t: float | None = None
    first_audible_t: float | None = None  # arrival of the frame holding the first audible sample + its offset in it
    tts_started: int = 0
    tts_stopped: int = 0
    response_ended: bool = False


class ReplyRecorder(FrameProcessor):
    """Where the output transport would be: records the reply audio and when it arrives; passes every frame on."""

    def __init__(self) -> None:
        super().__init__(name="ReplyRecorder")
        self.reply = Reply()
        self.done = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        now = time.monotonic()
        r = self.reply
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, TTSAudioRawFrame) and frame.audio:
                x = np.frombuffer(frame.audio, dtype=np.int16)
                if frame.num_channels > 1:
                    x = x[:: frame.num_channels]
                r.sample_rate = r.sample_rate or frame.sample_rate
                r.chunks.append(x)
                if r.first_audio_t is None:
                    r.first_audio_t = now
                if r.first_audible_t is None:
                    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > AUDIBLE)
                    if loud.size:
                        r.first_audible_t = now + float(loud[0]) / frame.sample_rate
            elif isinstance(frame, TTSStartedFrame):
                r.tts_started += 1
            elif isinstance(frame, TTSStoppedFrame):
                r.tts_stopped += 1
            elif isinstance(frame, LLMFullResponseEndFrame):
                r.response_ended = True
            # The reply is over once the LLM response has ended and every TTS context it opened has stopped.
            if r.response_ended and r.tts_started == r.tts_stopped:
                self.done.set()
        await self.push_frame(frame, direction)


class TextObserver(BaseObserver):
    """Collects the user's transcription and the LLM's streamed text, each frame once (at its first push)."""

    def __init__(self) -> None:
        super().__init__()
        self.transcripts: list[str] = []
        self.llm_text: list[str] = []
        self.llm_responses = 0  # more than one: a reply started on part of the question (a false endpoint)

    async def on_push_frame(self, data: FramePushed) -> None:
        if not data.first_push:
            return
        if isinstance(data.frame, TranscriptionFrame):
            self.transcripts.append(data.frame.text.strip())
        elif isinstance(data.frame, LLMTextFrame):
            self.llm_text.append(data.frame.text)
        elif isinstance(data.frame, LLMFullResponseStartFrame):
            self.llm_responses += 1


@dataclass
class Models:
    """What is loaded once per process and shared by every conversation."""

    whisper_dir: str
    piper_voice: PiperVoice
    piper_name: str


def read_wav_16k(path: str) -> np.ndarray:
    """A PCM16 WAV as int16 mono at 16 kHz (channels averaged, linear interpolation to 16 kHz)."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    if rate != IN_RATE and x.size:
        n = int(round(x.size * IN_RATE / rate))
        x = np.interp(np.arange(n) * (rate / IN_RATE), np.arange(x.size), x)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def longest_inner_silence_ms(audio: np.ndarray, rate: int) -> float:
    """Longest run of samples with |x| <= 0.01 strictly between the first and the last audible sample, in ms."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > AUDIBLE)
    if loud.size < 2:
        return 0.0
    gaps = np.diff(loud) - 1  # quiet samples between consecutive audible ones
    return float(gaps.max()) * 1000.0 / rate


def build_pipeline(models: Models, args: argparse.Namespace) -> tuple[Pipeline, MicSource, ReplyRecorder]:
    """A fresh cascade: mic -> STT -> user aggregator (VAD, turn) -> LLM -> TTS -> recorder -> assistant aggregator."""
    context = LLMContext()  # a new, empty conversation (Pipecat 1.14 takes the system prompt in the LLM settings)
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=args.stop_secs))),
    )
    stt = SharedWhisperSTTService(
        device="cpu",
        compute_type="int8",
        settings=WhisperSTTService.Settings(model=models.whisper_dir, language=Language.EN),
    )
    llm = OpenAILLMService(
        api_key="none",
        base_url=args.llm_url,
        settings=OpenAILLMService.Settings(
            model=LLM_MODEL, system_instruction=args.system_prompt, temperature=0.0, max_tokens=args.max_tokens
        ),
    )
    tts = LocalPiperTTSService(voice=models.piper_voice, voice_name=models.piper_name)
    source, recorder = MicSource(), ReplyRecorder()
    pipeline = Pipeline([source, stt, aggregators.user(), llm, tts, recorder, aggregators.assistant()])
    return pipeline, source, recorder


def result_line(
    reply: Reply, t_end: float | None, observer: TextObserver, error: str | None
) -> dict[str, float | str | None]:
    audio = np.concatenate(reply.chunks) if reply.chunks else np.zeros(0, np.int16)
    rate = reply.sample_rate or 1

    def since_end(t: float | None) -> float | None:
        return None if t is None or t_end is None else round((t - t_end) * 1000.0, 1)

    if error is None and reply.first_audio_t is None:
        error = "no reply audio"
    return {
        "ttfa_ms": since_end(reply.first_audio_t),
        "audible_ttfa_ms": since_end(reply.first_audible_t),
        "transcript": " ".join(t for t in observer.transcripts if t),
        "reply_text": "".join(observer.llm_text).strip(),
        "llm_responses": observer.llm_responses,
        "reply_audio_s": round(audio.size / rate, 3),
        "inner_silence_ms": round(longest_inner_silence_ms(audio, rate), 1),
        "error": error,
    }


async def converse(models: Models, args: argparse.Namespace, wav: str, end_ms: float) -> dict[str, float | str | None]:
    """One fresh conversation: feed the clip (then silence) at real time until the reply has been spoken."""
    clip = await asyncio.to_thread(read_wav_16k, wav)
    n_frames = -(-clip.size // FRAME_SAMPLES)
    clip = np.pad(clip, (0, n_frames * FRAME_SAMPLES - clip.size))
    silence = bytes(FRAME_SAMPLES * 2)
    end_frame = int(end_ms * IN_RATE / 1000.0) // FRAME_SAMPLES

    pipeline, source, recorder = build_pipeline(models, args)
    observer = TextObserver()
    worker = PipelineWorker(pipeline, observers=[observer])
    errors: list[str] = []

    @worker.event_handler("on_pipeline_error")
    async def on_pipeline_error(_worker: PipelineWorker, frame: ErrorFrame) -> None:
        errors.append(str(frame.error))
        if frame.fatal:
            recorder.done.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run_task = asyncio.create_task(runner.run())
    error: str | None = None
    t_end: float | None = None
    try:
        await asyncio.wait_for(source.started.wait(), timeout=60.0)
        t0 = time.monotonic()
        t_clip_end: float | None = None
        i = 0
        while not recorder.done.is_set():
            delay = t0 + i * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            if t_clip_end is not None and now - t_clip_end > REPLY_TIMEOUT_S:
                error = "timeout"
                break
            if i == end_frame:
                t_end = now
            pcm = clip[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].tobytes() if i < n_frames else silence
            await source.speak(pcm)
            i += 1
            if i == n_frames:
                t_clip_end = time.monotonic()
    finally:
        if error is None:
            await worker.stop_when_done()
        else:
            await worker.cancel(reason=error)
        try:
            await asyncio.wait_for(asyncio.shield(run_task), timeout=STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("pipeline did not end in time; cancelling it")
            await runner.cancel()
            await asyncio.wait_for(run_task, timeout=STOP_TIMEOUT_S)
    if errors:
        error = "; ".join([error, *errors] if error else errors)
    return result_line(recorder.reply, t_end, observer, error)


def load_models(args: argparse.Namespace) -> Models:
    """Load (and warm up) Whisper and Piper once."""
    SharedWhisperSTTService(
        device="cpu",
        compute_type="int8",
        settings=WhisperSTTService.Settings(model=args.whisper_dir, language=Language.EN),
    )
    whisper = next(iter(SharedWhisperSTTService._models.values()))
    noise = (np.random.default_rng(0).standard_normal(IN_RATE) * 0.01).astype(np.float32)
    list(whisper.transcribe(noise, language="en")[0])
    voice = PiperVoice.load(args.piper_model, config_path=args.piper_config)
    list(voice.synthesize("Hello."))
    return Models(whisper_dir=args.whisper_dir, piper_voice=voice, piper_name=Path(args.piper_model).stem)


async def warm_llm(args: argparse.Namespace) -> None:
    """One short request with the system prompt, so the server's prompt cache holds it as it would in service."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="none", base_url=args.llm_url)
    try:
        await client.chat.completions.create(
            model=LLM_MODEL,
            messages=[{"role": "system", "content": args.system_prompt}, {"role": "user", "content": "Hello."}],
            max_tokens=1,
            temperature=0.0,
        )
    except Exception as e:  # the per-conversation results will report a dead server
        logger.warning(f"LLM warm-up failed: {e}")
    finally:
        await client.close()


async def serve(args: argparse.Namespace, out: TextIO) -> None:
    models = await asyncio.to_thread(load_models, args)
    await warm_llm(args)

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    emit({"ready": True})
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            emit(await converse(models, args, str(request["wav"]), float(request["end_ms"])))
        except Exception as e:
            logger.exception("conversation failed")
            emit(
                {
                    "ttfa_ms": None,
                    "audible_ttfa_ms": None,
                    "transcript": "",
                    "reply_text": "",
                    "reply_audio_s": 0.0,
                    "inner_silence_ms": 0.0,
                    "error": f"{type(e).__name__}: {e}",
                }
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm-url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--whisper-dir", required=True, help="faster-whisper (CTranslate2) model directory")
    p.add_argument("--piper-model", required=True, help="Piper voice .onnx")
    p.add_argument("--piper-config", required=True, help="Piper voice .onnx.json")
    p.add_argument("--stop-secs", type=float, default=0.2, help="Silero VAD stop_secs")
    p.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT)
    p.add_argument("--max-tokens", type=int, default=96)
    args = p.parse_args()

    # stdout carries only the JSON lines: keep a private copy of it and point fd 1 (and sys.stdout) at stderr, so
    # nothing else (a native library included) can write there.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("PIPECAT_ANCHOR_LOG_LEVEL", "INFO"))

    asyncio.run(serve(args, out))
    out.close()


if __name__ == "__main__":
    main()
