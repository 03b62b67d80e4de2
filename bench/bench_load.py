"""Load on one gateway: N concurrent real-time duplex sessions on loopback, and one flooding client.

The real stack (embedded models, this machine). For each N, N clients stream a spoken question at real-time pace
(20 ms chunks, as microphones do), each while the others talk, and wait for the spoken reply. Reported per N: time
to first audio (client side: first reply audio - last speech sample sent) median and p95, turns completed, errors,
and the gateway process's resident memory (peak during the round, and per session above the idle baseline).
Then one client floods audio as fast as it can: the gateway must refuse it (RESOURCE_EXHAUSTED) with its memory
staying bounded. Bounded in count and time; loopback only.

    .venv/bin/python bench/bench_load.py [--sessions 1,2,4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.kit.audio import float_to_pcm16, read_wav, resample  # noqa: E402
from stepaudio.client import Conversation, session_config  # noqa: E402
from stepaudio.stack import Stack  # noqa: E402

RATE = 16000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_mb(pid), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak


async def one_session(addr: str, pcm: bytes, speech_end_s: float) -> tuple[float | None, int]:
    step = RATE // 50 * 2
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(RATE))
        t0, sent_end = time.monotonic(), 0.0
        for i, off in enumerate(range(0, len(pcm), step)):
            conv.send_audio(pcm[off:off + step])
            if not sent_end and off / 2 / RATE >= speech_end_s:
                sent_end = time.monotonic()
            await asyncio.sleep(max(t0 + (i + 1) * 0.02 - time.monotonic(), 0))
        try:
            await conv.wait_turns(1, 90)
            result = await conv.finish(60)
        except (TimeoutError, grpc.aio.AioRpcError):
            return None, 1
    if not result.audio:
        return None, len(result.errors) or 1
    return (result.last.first_audio_at - sent_end) * 1000, len(result.errors)


async def flood(addr: str, seconds: int) -> str:
    pcm = float_to_pcm16(np.zeros(RATE * seconds, np.float32))
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(RATE))
        for off in range(0, len(pcm), 640):
            conv.send_audio(pcm[off:off + 640])
        try:
            await conv.finish(60)
        except grpc.aio.AioRpcError as e:
            return e.code().name
    return "OK (not refused)"


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95)) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", default="1,2,4", help="concurrent sessions per round, comma-separated")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per N")
    ap.add_argument("--flood-seconds", type=int, default=600, help="audio the flooding client sends at once")
    args = ap.parse_args()
    x, sr = read_wav(ROOT / "tests" / "data" / "question.wav")
    audio = resample(x, sr, RATE)
    pcm = float_to_pcm16(audio)
    speech_end_s = (len(audio) - RATE) / RATE  # the clip ends with 1 s of silence

    stack = Stack(run_dir=ROOT / ".run" / "bench-load")
    print("starting the stack...", flush=True)
    stack.start()
    rows = []
    try:
        gw_pid = stack.procs["gateway"].pid
        asyncio.run(one_session(stack.gateway_addr, pcm, speech_end_s))  # warm-up, not measured
        idle = rss_mb(gw_pid)
        for n in [int(v) for v in args.sessions.split(",")]:
            ttfa: list[float] = []
            errors = failed = 0
            sampler = PeakRss(gw_pid)
            for _ in range(args.rounds):
                async def round_(n: int = n) -> list[tuple[float | None, int]]:
                    return await asyncio.gather(*(one_session(stack.gateway_addr, pcm, speech_end_s)
                                                  for _ in range(n)))

                for t, e in asyncio.run(round_()):
                    errors += e
                    if t is None:
                        failed += 1
                    else:
                        ttfa.append(t)
            peak = sampler.stop()
            rows.append((n, ttfa, errors, failed, peak, (peak - idle) / n))
            print(f"  N={n}: ttfa {[round(t) for t in ttfa]} errors {errors} failed {failed} peak {peak:.0f} MB",
                  flush=True)
        sampler = PeakRss(gw_pid)
        code = asyncio.run(flood(stack.gateway_addr, args.flood_seconds))
        flood_peak = sampler.stop()
    finally:
        stack.stop()

    print()
    print(f"one gateway, real-time duplex sessions of a {len(audio) / RATE:.1f} s question, {args.rounds} rounds "
          f"per N; gateway idle RSS {idle:.0f} MB")
    print(f"{'sessions':>8}{'ttfa med ms':>13}{'ttfa p95 ms':>13}{'ratio med':>11}{'turns':>7}{'errors':>8}"
          f"{'failed':>8}{'peak RSS MB':>13}{'MB/session':>12}")
    base = statistics.median(rows[0][1]) if rows and rows[0][1] else float("nan")
    for n, ttfa, errors, failed, peak, per in rows:
        med = statistics.median(ttfa) if ttfa else float("nan")
        print(f"{n:>8}{med:>13.0f}{p95(ttfa):>13.0f}{med / base:>11.2f}{len(ttfa):>7}{errors:>8}{failed:>8}"
              f"{peak:>13.0f}{per:>12.1f}")
    print(f"\nflooding client ({args.flood_seconds} s of audio at once): {code}; gateway peak RSS {flood_peak:.0f} MB "
          f"(idle {idle:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
