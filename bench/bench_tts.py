"""TTS-3B throughput and first-chunk latency: tokens from Triton (the torch Step1 model, 8 slots) versus eager
torch inside the TTS process under its lock, tiny checkpoints on CPU, in one run.

Both configurations are the real TTS gRPC service (flow matching + HiFT in process, streaming within a phrase) on
the same tiny store (``models.stepaudio.tiny``); only ``STEPAUDIO_TTS_LM_BACKEND`` differs. For 1, 4 and 8
concurrent sessions, each session streams one phrase (a fixed number of audio tokens: the tiny LM never says
EOT) and the bench records the time to its first audio chunk and the audio tokens per second of all sessions
together (tokens = reply audio length x 41.67 tokens/s: 25 Hz semantic + 16.7 Hz linguistic).

    .venv/bin/python bench/bench_tts.py [--rounds 3] [--tokens 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.stepaudio.tiny import make_tiny_store  # noqa: E402
from models.trtllm.make_repo import make_torch_model  # noqa: E402
from stepaudio.tritonserver import start_triton  # noqa: E402

TOKENS_PER_S = 41.67
TEXT = "Streaming speech from the platform arrives early and keeps flowing."


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


async def one_phrase(stub: object, rate_out: list[int]) -> tuple[float, float]:
    """(seconds to the first audio chunk, seconds of audio)."""
    from stepaudio.tts.v1 import tts_pb2

    t0 = time.perf_counter()
    first = None
    samples = 0
    req = tts_pb2.SynthesizeRequest(text=TEXT, config=tts_pb2.SynthesisConfig(voice="joe"))
    async for resp in stub.Synthesize(req, timeout=600):  # type: ignore[attr-defined]
        n = len(resp.chunk.audio.data) // 2
        if n and first is None:
            first = time.perf_counter() - t0
        samples += n
        if resp.chunk.sample_rate_hz:
            rate_out[0] = resp.chunk.sample_rate_hz
    return (first if first is not None else float("nan")), samples / rate_out[0]


async def run_config(name: str, addr: str, sessions: int, rounds: int) -> dict[str, float]:
    import grpc

    from stepaudio.tts.v1 import tts_pb2_grpc

    firsts: list[float] = []
    tps: list[float] = []
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = tts_pb2_grpc.TtsServiceStub(ch)
        await one_phrase(stub, [22050])  # warm
        for _ in range(rounds):
            rate = [22050]
            t0 = time.perf_counter()
            results = await asyncio.gather(*(one_phrase(stub, rate) for _ in range(sessions)))
            wall = time.perf_counter() - t0
            firsts += [r[0] for r in results]
            tps.append(sum(r[1] for r in results) * TOKENS_PER_S / wall)
    return {"first_med": statistics.median(firsts), "first_p95": p95(firsts), "tps": statistics.median(tps)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=100, help="audio tokens per phrase (2.4 s of speech)")
    ap.add_argument("--sessions", default="1,4,8")
    a = ap.parse_args()
    levels = [int(x) for x in a.sessions.split(",")]
    os.environ.update({"STEPAUDIO_TTS_MAX_NEW_TOKENS": str(a.tokens), "STEPAUDIO_TTS_SEED": "0",
                       "STEPAUDIO_TTS_DEVICE": "cpu", "OMP_NUM_THREADS": "1"})
    from services.tts.__main__ import build
    from services.tts.settings import TtsSettings

    with tempfile.TemporaryDirectory() as tmp:
        store = make_tiny_store(Path(tmp) / "models")
        repo = Path(tmp) / "repo"
        make_torch_model("tts", repo, {"checkpoint_dir": str(store / "Step-Audio-TTS-3B"), "device": "cpu",
                                       "threads": "1", "slots": "8"})
        with start_triton(repo, models=["step_audio_tts"], ready_timeout=240,
                          env={"STEPAUDIO_STEP1_THREADS": "1"}) as triton:

            async def bench() -> dict[tuple[str, int], dict[str, float]]:
                out: dict[tuple[str, int], dict[str, float]] = {}
                servers = {}
                for name, backend in (("in-process lock", "inprocess"), ("Triton (torch Step1)", "triton")):
                    os.environ["STEPAUDIO_TTS_LM_BACKEND"] = backend
                    os.environ["STEPAUDIO_TTS_TRITON_URLS"] = triton.grpc_url
                    server = build(TtsSettings(host="127.0.0.1", port=0, profile="stepaudio", model_dir=str(store),
                                               default_voice="joe", log_json=False, log_level="WARNING"))
                    servers[name] = (server, await server.start())
                for n in levels:  # alternate the configurations at each level: both see the same machine state
                    for name, (_, port) in servers.items():
                        out[(name, n)] = await run_config(name, f"127.0.0.1:{port}", n, a.rounds)
                for server, _ in servers.values():
                    await server.stop(0)
                return out

            results = asyncio.run(bench())
    print(f"\nTTS-3B tiny on CPU ({os.cpu_count()} cores), {a.tokens} audio tokens per phrase, {a.rounds} rounds")
    print(f"{'sessions':>8} | {'LM':<22} | {'first chunk med':>15} | {'p95':>7} | {'tokens/s':>9} | {'ratio':>6}")
    print("-" * 82)
    for n in levels:
        base = results[("in-process lock", n)]
        for name in ("in-process lock", "Triton (torch Step1)"):
            r = results[(name, n)]
            print(f"{n:>8} | {name:<22} | {r['first_med'] * 1000:>12.0f} ms | {r['first_p95'] * 1000:>4.0f} ms | "
                  f"{r['tps']:>9.1f} | {r['tps'] / base['tps']:>5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
