"""Conversation-logger benchmark: what emit() costs the caller, and producer throughput.

    .venv/bin/python bench/bench_convlog.py                          # spool only
    .venv/bin/python bench/bench_convlog.py --bootstrap 127.0.0.1:9092 --topic bench.conversation.v1

Rows (all measured in this run): a no-op baseline (a call that returns a constant), ``emit()`` of a ready
ConversationEvent, and ``turn_recorded()`` (the gateway call). emit p50/p99 is the time the call takes the caller;
events/s is end-to-end throughput: from the first emit until every event is spooled (and acknowledged by Kafka
with acks=all when --bootstrap is given). Target: emit p99 under 1 ms.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from services.convlog import ConversationLogger, ConvlogSettings
from stepaudio.logs.v1 import logs_pb2


def _row(name: str, lat: list[float], total_s: float, n: int, ok: bool) -> str:
    lat = sorted(lat)
    p50, p99 = lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6
    mean = statistics.fmean(lat) * 1e6
    done = "" if ok else "  (not all delivered in time)"
    return f"| {name:<24} | {n:>7} | {n / total_s:>12,.0f} | {mean:>9.1f} | {p50:>8.1f} | {p99:>8.1f} |{done}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="", help="Kafka bootstrap servers; empty = spool only")
    ap.add_argument("--topic", default="stepaudio.conversation.v1")
    ap.add_argument("-n", type=int, default=20_000, help="events per row")
    ap.add_argument("--fsync", default="interval", choices=["always", "interval", "none"])
    ap.add_argument("--pace-us", type=float, default=0.0, help="sleep between emits (0 = as fast as possible)")
    a = ap.parse_args()
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    tmp = Path(tempfile.mkdtemp(prefix="bench-convlog-"))
    sink = f"Kafka {a.bootstrap} acks=all" if a.bootstrap else "spool only"
    print(f"sink: {sink}; fsync={a.fsync}; n={a.n}; pace={a.pace_us} us")
    print("| row                      |  events |     events/s |  mean us |   p50 us |   p99 us |")
    print("|--------------------------|---------|--------------|----------|----------|----------|")

    def pace() -> None:
        if a.pace_us:
            time.sleep(a.pace_us / 1e6)

    noop = lambda ev: "id"  # noqa: E731
    lat = []
    t0 = time.perf_counter()
    for i in range(a.n):
        ev = logs_pb2.ConversationEvent(session_id=f"s{i % 100}")
        s = time.perf_counter()
        noop(ev)
        lat.append(time.perf_counter() - s)
        pace()
    print(_row("baseline no-op call", lat, time.perf_counter() - t0, a.n, True), flush=True)

    for name in ("emit(event)", "turn_recorded(...)"):
        st = ConvlogSettings(
            spool_dir=tmp / name[:4] / "spool",
            audio_dir=tmp / "audio",
            bootstrap_servers=a.bootstrap,
            topic=a.topic,
            fsync_policy=a.fsync,
        )
        log = ConversationLogger(st).start()
        lat = []
        t0 = time.perf_counter()
        for i in range(a.n):
            if name.startswith("emit"):
                ev = logs_pb2.ConversationEvent(session_id=f"s{i % 100}", turn_id=f"t{i}", consent=True)
                ev.turn_recorded.user_transcript = "what's the weather like in Paris tomorrow"
                ev.turn_recorded.reply_text = "Tomorrow in Paris: sunny, 21 degrees."
                s = time.perf_counter()
                log.emit(ev)
            else:
                s = time.perf_counter()
                log.turn_recorded(
                    session_id=f"s{i % 100}",
                    turn_id=f"t{i}",
                    consent=True,
                    user_transcript="what's the weather like in Paris tomorrow",
                    transcript_confidence=0.93,
                    reply_text="Tomorrow in Paris: sunny, 21 degrees.",
                    latencies={"first_audio_ms": 420, "total_ms": 2100},
                )
            lat.append(time.perf_counter() - s)
            pace()
        ok = log.flush(120)
        total = time.perf_counter() - t0
        log.close()
        print(_row(name, lat, total, a.n, ok), flush=True)


if __name__ == "__main__":
    main()
