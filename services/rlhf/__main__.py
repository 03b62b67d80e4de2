"""``python -m services.rlhf`` runs the collector; ``python -m services.rlhf export --since ISO --until ISO
--out DIR [--dataset DIR]`` exports the published pairs of a time range (shards + manifest.json)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import UTC, datetime


def _ns(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e9)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    from services.rlhf.settings import RlhfSettings

    ap = argparse.ArgumentParser(prog="python -m services.rlhf", description=__doc__)
    sub = ap.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="consume events and build the dataset (default)")
    run.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    ex = sub.add_parser("export", help="export the pairs of a time range")
    ex.add_argument("--since", required=True, help="ISO-8601 start (inclusive), e.g. 2025-03-01T00:00:00Z")
    ex.add_argument("--until", required=True, help="ISO-8601 end (exclusive)")
    ex.add_argument("--out", required=True, help="output directory")
    ex.add_argument("--dataset", default=None, help="dataset dir (default STEPAUDIO_RLHF_DATASET_DIR)")
    ex.add_argument("--format", choices=["pairs", "dpo"], default="pairs",
                    help="pairs: PreferencePair JSONL shards; dpo: prompt/chosen/rejected JSONL + Parquet (TRL)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = RlhfSettings()
    if a.cmd == "export":
        from services.rlhf.store import export, export_dpo

        try:
            since, until = _ns(a.since), _ns(a.until)
        except ValueError as exc:
            ap.error(f"--since/--until must be ISO-8601 times: {exc}")
        if a.format == "dpo":
            m = export_dpo(a.dataset or settings.dataset_dir, a.out, since, until)
            print(f"exported {m['counts']['rows']} DPO rows to {a.out}")
            return 0
        m = export(a.dataset or settings.dataset_dir, a.out, since, until, settings.shard_max_pairs)
        print(f"exported {m['counts']['pairs']} pairs in {m['counts']['shards']} shards to {a.out}")
        return 0
    from services.rlhf.collector import Collector

    col = Collector(settings)
    signal.signal(signal.SIGTERM, lambda *_: col.stop())
    signal.signal(signal.SIGINT, lambda *_: col.stop())
    try:
        totals = col.run(timeout_s=getattr(a, "max_seconds", None))
    finally:
        col.close()
    print(totals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
