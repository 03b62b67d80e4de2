"""Step-Audio-TTS-3B (Step1 LM -> dual-codebook audio tokens) + CosyVoice flow matching (-> mel) + HiFT.

``STEPAUDIO_TTS_MODEL_DIR`` is the models root (``stepaudio models fetch`` layout) or its ``Step-Audio-TTS-3B``
child; the Step-Audio-Tokenizer is read from the root when voices have to be registered. Everything the
manifest lists for the tts service, plus flow.pt/hift.pt of both CosyVoice sets, is checked at start.

Output kinds: AUDIO_TOKENS (X = id - 65536, 0..5119), MEL ([frames, 80] log-mel, 22,050 Hz, hop 256) and AUDIO
(HiFT in process, 22,050 Hz). Style tags are parsed by :mod:`models.stepaudio.style`; RAP/哼唱 switch the system
prompt, the voice to ``{voice}RAP`` / ``{voice}哼唱`` and the flow/HiFT weights to CosyVoice-300M-25Hz-Music.

Voices: ``<voices_dir>/<name>.npz`` (see :class:`models.stepaudio.voices.VoiceRegistry`). A ``<name>.wav`` with
its exact transcript in ``<name>.txt`` placed there is registered (dual tokens, prompt mel, CAM++ x-vector) at
start when no ``<name>.npz`` exists yet.

Text encoder (ids for the Step1 prompt): :func:`models.stepaudio.text_codec.load_text_codec`.

Where TTS-3B runs (``STEPAUDIO_TTS_LM_BACKEND``):

* ``triton`` (deployments): the service sends the prompt ids to the ``step_audio_tts`` Triton model and receives
  audio ids as they are sampled (the audio-id mask, repetition guard and top-k live in that model: TensorRT-LLM
  on GPU, the torch Step1 model on CPU); concurrent phrases batch there. Flow matching and HiFT stay here.
* ``inprocess``: TTS-3B as eager torch inside this process, one phrase at a time (a laptop without Triton).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.stepaudio.audio_tokens import AUDIO_VOCAB_OFFSET
from models.stepaudio.cosyvoice import (
    TTS_DIR,
    cosy_dirs,
    fail_if_missing,
    load_flow_dir,
    load_hift_dir,
    missing_files,
    resolve_device,
)
from models.stepaudio.style import SPEEDS, parse_style, split_tags
from models.stepaudio.text_codec import load_text_codec
from services.kit.errors import InvalidArgument, NotFound, invalid_argument_on
from services.tts.backends.base import Synthesis, TtsBackend, VoiceSpec
from services.tts.settings import TtsSettings

AUDIO_VOCAB_SIZE = 5120
KIND_AUDIO, KIND_AUDIO_TOKENS, KIND_MEL = 1, 2, 3
ENV = "STEPAUDIO_TTS_MODEL_DIR"


class StepAudioTtsOptions(BaseSettings):
    """Extra settings of the stepaudio TTS backend (env prefix ``STEPAUDIO_TTS_``)."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_TTS_", extra="ignore")

    voices_dir: str = Field(default="", description="Voice registry dir; empty means <model_dir>/voices.")
    device: str = Field(default="auto", description="torch device for TTS-3B, flow and HiFT: auto, cpu, cuda[:N].")
    temperature: float = Field(default=0.7, description="TTS-3B sampling temperature (reference 0.7).")
    top_p: float = Field(default=1.0, description="TTS-3B nucleus sampling threshold (reference: off, 1.0).")
    top_k: int = Field(default=50, ge=0, description="TTS-3B top-k sampling (reference: transformers' default 50; "
                                                     "0 = off).")
    max_length: int = Field(default=8192, description="Prompt + generated tokens cap (reference 8192).")
    max_new_tokens: int = Field(
        default=2048, description="Most audio tokens per phrase (41.7 per second of speech: 2048 is about 49 s)."
    )
    seed: int = Field(default=-1, description="Sampling seed per phrase: -1 draws a fresh one; >= 0 reproducible.")
    flow_seed: int = Field(default=0, description="Seed of the flow ODE start noise and of the HiFT excitation.")
    stream_chunk_tokens: int = Field(
        default=50, gt=0, description="Streaming within a phrase: audio tokens per flow window / token run (50 is "
        "1.2 s; keep it a multiple of 5, one [2 linguistic, 3 semantic] group)."
    )
    lm_backend: str = Field(
        default="inprocess", pattern="^(inprocess|triton)$",
        description="Where TTS-3B samples: triton (the step_audio_tts model; phrases run concurrently) or inprocess "
        "(eager torch here, one phrase at a time).",
    )
    triton_urls: str = Field(default="", description="lm_backend=triton: Triton gRPC endpoints, comma separated.")
    triton_model: str = Field(default="step_audio_tts", description="lm_backend=triton: the TTS-3B model's name.")
    triton_first_token_timeout_s: float = Field(
        default=30.0, gt=0, description="lm_backend=triton: an endpoint with no first token by then is skipped."
    )
    triton_ready_wait_s: float = Field(
        default=300.0, ge=0, description="lm_backend=triton: how long warm-up waits for the model to be ready."
    )
    stream_overlap_tokens: int = Field(
        default=10, gt=0, description="Streaming: look-ahead tokens each flow window also sees, cross-faded at the "
        "seam; the first audio comes after chunk + overlap tokens. Must be below stream_chunk_tokens."
    )


def speed_tag(speed: float) -> str:
    """The model speed tag nearest to a speed factor ('' for about 1.0)."""
    if abs(speed - 1.0) < 0.07:
        return ""
    return min(SPEEDS, key=lambda t: abs(SPEEDS[t][1] - speed))


class StepAudioTts(TtsBackend):
    """One phrase per call: plan the prompt, sample audio tokens, then flow (+ HiFT) with the voice prompt.

    :meth:`synthesize` runs the flow offline on the whole phrase; :meth:`synthesize_stream` (used by the server)
    feeds the streaming flow as tokens are sampled and yields pieces as they are ready.
    """

    output_kinds = (KIND_AUDIO, KIND_AUDIO_TOKENS, KIND_MEL)

    def __init__(self, settings: TtsSettings, options: StepAudioTtsOptions | None = None) -> None:
        import torch

        from models.stepaudio import store
        from models.stepaudio.step1 import Step1ForCausalLM
        from models.stepaudio.token2wav import Token2Wav
        from models.stepaudio.voices import VoiceRegistry

        self.opts = options or StepAudioTtsOptions()
        if not settings.model_dir:
            raise ValueError(f"{ENV} is empty: set it to the models root (holding {TTS_DIR}/ and "
                             "Step-Audio-Tokenizer/)")
        d = Path(settings.model_dir)
        self.root = d.parent if d.name == TTS_DIR and not (d / TTS_DIR).is_dir() else d
        self.tts_dir = self.root / TTS_DIR
        common, music = cosy_dirs(self.tts_dir)
        problems = store.verify(self.root, service="tts")
        problems += [p for p in missing_files([c / f for c in (common, music) for f in ("flow.pt", "hift.pt")])
                     if p not in problems]
        fail_if_missing(problems, "tts (Step-Audio-TTS-3B)", ENV, self.root)
        torch.set_num_threads(max(1, settings.model_threads))
        self.device = resolve_device(self.opts.device)
        self.lm: Any = None
        self.triton: _TritonTokens | None = None
        if self.opts.lm_backend == "triton":
            self.triton = _TritonTokens(self.opts)
            vocab = int(json.loads((self.tts_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"])
        else:
            self.lm = Step1ForCausalLM.from_pretrained(self.tts_dir, self.device)
            vocab = self.lm.config.vocab_size
        self.encoder = load_text_codec(self.tts_dir)
        self.engines = {
            name: Token2Wav(load_flow_dir(c, self.device), load_hift_dir(c, self.device), seed=self.opts.flow_seed)
            for name, c in (("common", common), ("music", music))
        }
        self.campplus_path = common / "campplus.onnx"
        self.registry = VoiceRegistry(Path(self.opts.voices_dir) if self.opts.voices_dir else d / "voices")
        self._register_pending()
        if not self.registry.names():
            raise FileNotFoundError(
                f"no voices in {self.registry.root}: put <name>.wav and its exact transcript <name>.txt there "
                "(registered at start), or <name>.npz voice files"
            )
        if vocab < AUDIO_VOCAB_OFFSET + AUDIO_VOCAB_SIZE:
            raise ValueError(f"{self.tts_dir}/config.json vocab_size={vocab} has no audio ids (65536..70655)")
        mask = torch.full((vocab,), float("-inf"))
        mask[AUDIO_VOCAB_OFFSET : AUDIO_VOCAB_OFFSET + AUDIO_VOCAB_SIZE] = 0.0
        mask[3] = 0.0  # EOT ends the utterance
        self._mask = mask.to(self.device)
        if self.opts.stream_overlap_tokens >= self.opts.stream_chunk_tokens:
            raise ValueError(f"STEPAUDIO_TTS_STREAM_OVERLAP_TOKENS={self.opts.stream_overlap_tokens} must be below "
                             f"STEPAUDIO_TTS_STREAM_CHUNK_TOKENS={self.opts.stream_chunk_tokens}")
        # In process, TTS-3B is one model under one lock; on Triton the phrases batch there and the flow and HiFT
        # (stateless per stream) run concurrently here.
        self._lock: Any = threading.Lock() if self.triton is None else contextlib.nullcontext()
        self.last_stream: StreamStats | None = None

    def warmup(self) -> None:
        if self.triton is not None and not self.triton.ready(self.opts.triton_ready_wait_s):
            raise RuntimeError(f"Triton model {self.opts.triton_model!r} is not ready at {self.opts.triton_urls} "
                               f"after {self.opts.triton_ready_wait_s:g} s: start it (docs/TRITON.md)")
        super().warmup()

    def dependencies_down(self) -> list[str]:
        if self.triton is None or self.triton.ready(0.0):
            return []
        return [f"Triton model {self.opts.triton_model} at {self.opts.triton_urls}"]

    def _register_pending(self) -> None:
        """Register ``<name>.wav`` + ``<name>.txt`` that have no ``<name>.npz`` yet."""
        pending = [w for w in sorted(self.registry.root.glob("*.wav")) if w.stem not in self.registry]
        if not pending:
            return
        from models.stepaudio.tokenizer import DualTokenizer
        from models.stepaudio.voices import CampPlus
        from services.kit.audio import read_wav

        tok_dir = self.root / "Step-Audio-Tokenizer"
        camp = CampPlus(self.campplus_path)
        dual = DualTokenizer.load(tok_dir)
        for wav in pending:
            txt = wav.with_suffix(".txt")
            if not txt.is_file():
                raise FileNotFoundError(f"missing {txt}: the exact transcript of voice prompt {wav}")
            audio, rate = read_wav(wav)
            self.registry.register(wav.stem, audio, rate, txt.read_text(encoding="utf-8").strip(), dual, camp)

    def voices(self) -> list[VoiceSpec]:
        return [VoiceSpec(n, ["zh", "en", "ja", "ko", "yue"], 22050) for n in self.registry.names()]

    def _audio_only(self, scores: Any, history: list[int]) -> Any:
        return scores + self._mask

    def _prepare(self, text: str, voice: str, style: str, speed: float, output_kind: int) -> tuple[int, Any, int]:
        """Check the request and plan the TTS-3B prompt: (output kind, plan, sampling seed)."""
        from models.stepaudio.tts_frontend import InstructionError, plan_registered

        kind = output_kind or KIND_AUDIO
        if kind not in self.output_kinds:
            raise InvalidArgument(f"output_kind {kind} not served: use 1 (AUDIO), 2 (AUDIO_TOKENS) or 3 (MEL)")
        speed = speed or 1.0
        if not 0.25 <= speed <= 4.0:
            raise InvalidArgument(f"speed {speed:.2f} out of range: use 0.25 to 4.0")
        with invalid_argument_on():
            inline, body = split_tags(text)
            tags = parse_style((style or "") + inline.prefix())  # one place for unknown/conflicting tags
        prefix = tags.prefix()
        if not tags.speed and (t := speed_tag(speed)):
            prefix += f"({t})"  # the model's own speed control (the reference used sox tempo afterwards)
        try:
            plan = plan_registered(self.encoder, prefix + body, voice, self.registry)
        except InstructionError as e:
            raise InvalidArgument(str(e)) from e
        except ValueError as e:
            raise NotFound(str(e)) from e
        if len(plan.input_ids) >= self.opts.max_length:
            raise InvalidArgument(f"text plus the voice prompt is {len(plan.input_ids)} tokens; max_length is "
                                  f"{self.opts.max_length}: send shorter text")
        seed = self.opts.seed if self.opts.seed >= 0 else int(np.random.default_rng().integers(2**31))
        return kind, plan, seed

    def _tokens(self, plan: Any, seed: int) -> Generator[int, None, None]:
        """TTS-3B audio ids (65536 + X) as sampled."""
        import torch

        if self.triton is not None:
            budget = min(self.opts.max_new_tokens, self.opts.max_length - len(plan.input_ids))
            if budget <= 0:
                nothing: list[int] = []
                return (t for t in nothing)  # no room left: nothing to sample (as in process)
            return self.triton.tokens(plan.input_ids, budget, seed)

        return self.lm.generate_stream(  # type: ignore[return-value]  # a generator function
            plan.input_ids, max_new_tokens=self.opts.max_new_tokens, temperature=self.opts.temperature,
            top_p=self.opts.top_p, top_k=self.opts.top_k, repetition_guard=True, max_length=self.opts.max_length,
            generator=torch.Generator().manual_seed(seed), logits_hook=self._audio_only,
        )

    def _flow_prompt(self, plan: Any) -> Any:
        from models.stepaudio.token2wav import FlowPrompt

        entry = self.registry.get(plan.voice_key)
        return FlowPrompt(entry.flow_tokens, entry.prompt_mel, entry.embedding)

    def synthesize(self, text: str, voice: str, style: str, speed: float, output_kind: int) -> Synthesis:
        kind, plan, seed = self._prepare(text, voice, style, speed, output_kind)
        with self._lock:
            xs = [i - AUDIO_VOCAB_OFFSET for i in self._tokens(plan, seed)]
            if kind == KIND_AUDIO_TOKENS:
                return Synthesis(audio_tokens=xs)
            engine = self.engines[plan.flow_set]
            if not xs:
                empty = np.zeros((0, 80), np.float32)
                return Synthesis(mel=empty) if kind == KIND_MEL else Synthesis(audio=np.zeros(0, np.float32))
            mel = engine.offline_mel(xs, self._flow_prompt(plan), max_tokens=max(len(xs), self.opts.max_new_tokens))
            if kind == KIND_MEL:
                return Synthesis(mel=np.ascontiguousarray(mel.T, dtype=np.float32))
            return Synthesis(audio=engine.vocode(mel).astype(np.float32), sample_rate_hz=engine.sample_rate)

    def synthesize_stream(
        self, text: str, voice: str, style: str, speed: float, output_kind: int,
        cancel: threading.Event | None = None,
    ) -> Iterator[Synthesis]:
        """Stream within the phrase: TTS-3B tokens go to the streaming flow (+ HiFT) as they are sampled.

        AUDIO yields each waveform piece :class:`Token2WavStream` finalises (the first after
        ``stream_chunk_tokens + stream_overlap_tokens`` tokens), MEL the mel frames of each finalised token
        window ([frames, 80], not vocoded), AUDIO_TOKENS runs of ``stream_chunk_tokens`` ids. A phrase with no
        tokens yields one empty piece. ``cancel`` is checked between tokens; once set, generation stops and
        nothing more is yielded. The backend lock is held until the iterator ends or is closed.
        Progress of the last call is in :attr:`last_stream` (tokens sampled when each piece was yielded).
        """
        kind, plan, seed = self._prepare(text, voice, style, speed, output_kind)
        chunk, overlap = self.opts.stream_chunk_tokens, self.opts.stream_overlap_tokens
        with self._lock:
            stats = StreamStats(kind=kind, started=time.perf_counter())
            self.last_stream = stats
            tokens = self._tokens(plan, seed)
            pieces = 0

            def piece(syn: Synthesis) -> Synthesis:
                nonlocal pieces
                pieces += 1
                stats.tokens_at_piece.append(stats.tokens)
                if stats.first_piece_s is None:
                    stats.first_piece_s = time.perf_counter() - stats.started
                return syn

            try:
                if kind == KIND_AUDIO_TOKENS:
                    run: list[int] = []
                    for tok in tokens:
                        if cancel is not None and cancel.is_set():
                            stats.cancelled = True
                            return
                        stats.tokens += 1
                        run.append(tok - AUDIO_VOCAB_OFFSET)
                        if len(run) >= chunk:
                            yield piece(Synthesis(audio_tokens=run))
                            run = []
                    if run or not pieces:
                        yield piece(Synthesis(audio_tokens=run))
                    return
                engine = self.engines[plan.flow_set]
                prompt = self._flow_prompt(plan)
                opts = dict(chunk_tokens=chunk, overlap_tokens=overlap, max_tokens=self.opts.max_new_tokens)
                if kind == KIND_MEL:
                    mel_stream = _mel_stream_class()(engine, prompt, **opts)

                    def push(x: int) -> list[Synthesis]:
                        mel_stream.push([x])
                        return [Synthesis(mel=np.ascontiguousarray(m.T, dtype=np.float32)) for m in mel_stream.take()]

                    def finish() -> list[Synthesis]:
                        mel_stream.finish()
                        return [Synthesis(mel=np.ascontiguousarray(m.T, dtype=np.float32)) for m in mel_stream.take()]
                else:
                    wav_stream = engine.stream(prompt, **opts)

                    def audio(waves: list[np.ndarray]) -> list[Synthesis]:
                        return [Synthesis(audio=w.astype(np.float32), sample_rate_hz=engine.sample_rate) for w in waves]

                    def push(x: int) -> list[Synthesis]:
                        return audio(wav_stream.push([x]))

                    def finish() -> list[Synthesis]:
                        return audio(wav_stream.finish())

                for tok in tokens:
                    if cancel is not None and cancel.is_set():
                        stats.cancelled = True
                        return
                    stats.tokens += 1
                    for syn in push(tok - AUDIO_VOCAB_OFFSET):
                        yield piece(syn)
                if cancel is not None and cancel.is_set():
                    stats.cancelled = True
                    return
                for syn in finish():
                    yield piece(syn)
                if not pieces:
                    empty = Synthesis(mel=np.zeros((0, 80), np.float32)) if kind == KIND_MEL else Synthesis(
                        audio=np.zeros(0, np.float32), sample_rate_hz=engine.sample_rate)
                    yield piece(empty)
            finally:
                tokens.close()
                stats.total_s = time.perf_counter() - stats.started


class _TritonTokens:
    """TTS-3B audio ids from the ``step_audio_tts`` Triton model, for the synthesis worker threads.

    The platform's Triton client (:class:`services.kit.triton.TritonPool`) is asyncio; it runs on a loop of its own
    in a daemon thread, and each phrase pulls its responses from there. Closing the generator cancels the request.
    """

    def __init__(self, opts: StepAudioTtsOptions) -> None:
        from services.kit.triton import TritonPool

        urls = [u.strip() for u in opts.triton_urls.split(",") if u.strip()]
        self.pool = TritonPool(urls, first_token_timeout_s=opts.triton_first_token_timeout_s,
                               env_hint="STEPAUDIO_TTS_TRITON_URLS")
        self.opts = opts
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="tts-triton", daemon=True).start()

    def ready(self, wait_s: float) -> bool:
        coro = self.pool.warmup(self.opts.triton_model, wait_s) if wait_s > 0 else self.pool.ready(
            self.opts.triton_model, reset_on_error=False, timeout_s=5.0)
        return bool(asyncio.run_coroutine_threadsafe(coro, self.loop).result(wait_s + 10))

    def tokens(self, prompt_ids: list[int], max_tokens: int, seed: int) -> Generator[int, None, None]:
        from services.kit.triton import token_inputs

        inputs = token_inputs(prompt_ids, max_tokens, self.opts.temperature, self.opts.top_p, self.opts.top_k, seed)
        timeout = max(30.0, max_tokens / 5.0)  # a whole phrase, even at 5 tokens/s
        agen: Any = self.pool.stream(self.opts.triton_model, inputs, f"tts-{uuid.uuid4().hex[:12]}", timeout)
        try:
            while True:
                try:
                    result, _ = asyncio.run_coroutine_threadsafe(agen.__anext__(), self.loop).result()
                except StopAsyncIteration:
                    return
                ids = result.as_numpy("output_ids")
                if ids is not None:
                    yield from (int(i) for i in ids.reshape(-1))
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(agen.aclose(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.pool.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class StreamStats:
    """Progress of one :meth:`StepAudioTts.synthesize_stream` call (for tests and logs)."""

    kind: int
    started: float
    tokens: int = 0  # audio tokens sampled so far
    tokens_at_piece: list[int] = field(default_factory=list)  # ``tokens`` when each piece was yielded
    first_piece_s: float | None = None  # seconds from the start of generation to the first piece
    total_s: float | None = None  # seconds until the iterator ended
    cancelled: bool = False


@functools.cache
def _mel_stream_class() -> type:
    """A :class:`Token2WavStream` that stops at the mel (no HiFT); ``take()`` returns newly finalised frames."""
    from models.stepaudio.token2wav import Token2WavStream

    class MelStream(Token2WavStream):
        taken = 0

        def _vocode(self, final: bool) -> None:
            return None

        def take(self) -> list[np.ndarray]:
            new = [m for m in self.mel[self.taken :] if m.shape[1]]
            self.taken = len(self.mel)
            return new

    return MelStream
