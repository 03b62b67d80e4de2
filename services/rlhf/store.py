"""Dataset store of the RLHF collector: SQLite state + JSONL shards + manifest.json, in ``dataset_dir``.

Files::

    state.sqlite        events (dedupe by event_id + join state), turns, pairs, shards, dlq, counters
    shards/pairs-000001.jsonl   one PreferencePair per line (protobuf JSON, field names as in the .proto)
    manifest.json       counts, time range, and name/pairs/bytes/sha256/time range of every shard

Exactly-once protocol (one poll batch at a time):

1. Malformed records are sent to the dead-letter topic and flushed (their topic/partition/offset are recorded
   in step 2, so a replay does not send them again once step 2 committed).
2. ONE SQLite transaction: insert each event id (``INSERT OR IGNORE``: an id already present is a duplicate and
   skipped), update the join state, build the pairs of finalized turns, insert them (pair ids are
   deterministic), bump the counters. This commit is the commit point of the batch.
3. When a shard is due, the pending pairs are written to ``shards/NAME.jsonl.tmp``, fsync'ed, renamed, and then
   a second transaction records the shard (name, sha256, ...) and marks its pairs; ``manifest.json`` is then
   rewritten atomically. A shard file that no transaction records (crash between rename and commit) is
   deleted at start-up and written again from the same pairs.
4. Only then are the Kafka offsets committed. A crash anywhere before 4 replays the batch; every event id of it
   is already in ``events`` and is skipped, so each event has its effect once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from stepaudio.logs.v1 import logs_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, session_id TEXT, turn_id TEXT, kind TEXT,
                                   occurred_ns INTEGER, blob BLOB);
CREATE INDEX IF NOT EXISTS events_turn ON events(session_id, turn_id);
CREATE TABLE IF NOT EXISTS turns (session_id TEXT, turn_id TEXT, last_ns INTEGER, consent INTEGER DEFAULT 0,
                                  finalized INTEGER DEFAULT 0, PRIMARY KEY (session_id, turn_id));
CREATE INDEX IF NOT EXISTS turns_open ON turns(finalized, last_ns);
CREATE TABLE IF NOT EXISTS pairs (pair_id TEXT PRIMARY KEY, occurred_ns INTEGER, reason TEXT, json TEXT,
                                  added REAL, shard TEXT);
CREATE INDEX IF NOT EXISTS pairs_pending ON pairs(shard);
CREATE INDEX IF NOT EXISTS pairs_time ON pairs(occurred_ns);
CREATE TABLE IF NOT EXISTS shards (name TEXT PRIMARY KEY, pairs INTEGER, bytes INTEGER, sha256 TEXT,
                                   min_ns INTEGER, max_ns INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS dlq (topic TEXT, part INTEGER, off INTEGER, PRIMARY KEY (topic, part, off));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER);
"""


def iso(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as ISO-8601 UTC."""
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def pair_json(p: logs_pb2.PreferencePair) -> str:
    """One JSONL line (no newline) for a pair."""
    return json.dumps(
        json_format.MessageToDict(p, preserving_proto_field_name=True), ensure_ascii=False, sort_keys=True
    )


def write_shard(path: Path, lines: Iterable[str]) -> tuple[int, int, str]:
    """Write a JSONL file atomically (tmp, fsync, rename); returns (lines, bytes, sha256)."""
    tmp = path.with_name(path.name + ".tmp")
    h = hashlib.sha256()
    n = size = 0
    with open(tmp, "wb") as f:
        for line in lines:
            data = (line + "\n").encode()
            f.write(data)
            h.update(data)
            n += 1
            size += len(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n, size, h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON atomically (tmp, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DatasetStore:
    """State and output of the collector (see the module docstring for the protocol)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.root / "state.sqlite", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._cleanup_orphans()

    def _cleanup_orphans(self) -> None:
        known = {r[0] for r in self.db.execute("SELECT name FROM shards")}
        for p in self.shard_dir.iterdir():
            if p.name not in known:
                p.unlink()
        self.write_manifest()

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    # ------------------------------------------------------------------ counters
    def counters(self) -> dict[str, int]:
        """All counters."""
        return dict(self.db.execute("SELECT name, value FROM counters").fetchall())

    def bump(self, name: str, n: int = 1) -> None:
        """Add to a counter (inside the caller's transaction)."""
        if n:
            self.db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, n),
            )

    # ------------------------------------------------------------------ shards and manifest
    def pending_pairs(self) -> tuple[int, float | None]:
        """(number of pairs not yet in a shard, wall time the oldest was added)."""
        n, oldest = self.db.execute("SELECT COUNT(*), MIN(added) FROM pairs WHERE shard IS NULL").fetchone()
        return int(n), oldest

    def flush_shard(self) -> str | None:
        """Write every pending pair into a new shard; returns its name (None when nothing was pending)."""
        rows = self.db.execute(
            "SELECT pair_id, occurred_ns, json FROM pairs WHERE shard IS NULL ORDER BY occurred_ns, pair_id"
        ).fetchall()
        if not rows:
            return None
        seq = self.db.execute("SELECT COUNT(*) FROM shards").fetchone()[0] + 1
        name = f"pairs-{seq:06d}.jsonl"
        n, size, sha = write_shard(self.shard_dir / name, (r[2] for r in rows))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, n, size, sha, min(r[1] for r in rows), max(r[1] for r in rows), time.time()),
            )
            self.db.executemany("UPDATE pairs SET shard = ? WHERE pair_id = ?", [(name, r[0]) for r in rows])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.write_manifest()
        return name

    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict."""
        shards = self.db.execute(
            "SELECT name, pairs, bytes, sha256, min_ns, max_ns FROM shards ORDER BY name"
        ).fetchall()
        reasons = dict(
            self.db.execute("SELECT reason, COUNT(*) FROM pairs WHERE shard IS NOT NULL GROUP BY reason").fetchall()
        )
        c = self.counters()
        return {
            "dataset": "stepaudio-preference-pairs",
            "schema": "stepaudio.logs.v1.PreferencePair",
            "format": "jsonl (protobuf JSON, proto field names)",
            "updated_at": iso(time.time_ns()),
            "counts": {
                "pairs": sum(s[1] for s in shards),
                "shards": len(shards),
                "by_reason": reasons,
                "events": c.get("events", 0),
                "duplicates_skipped": c.get("duplicates", 0),
                "dead_lettered": c.get("dlq", 0),
                "late_events": c.get("late", 0),
                "turns_finalized": c.get("turns_finalized", 0),
                "turns_without_consent": c.get("no_consent", 0),
            },
            "time_range": {
                "from": iso(min((s[4] for s in shards), default=None)),
                "to": iso(max((s[5] for s in shards), default=None)),
            },
            "shards": [
                {
                    "name": f"shards/{s[0]}",
                    "pairs": s[1],
                    "bytes": s[2],
                    "sha256": s[3],
                    "from": iso(s[4]),
                    "to": iso(s[5]),
                }
                for s in shards
            ],
        }

    def write_manifest(self) -> None:
        """Rewrite manifest.json atomically."""
        write_json_atomic(self.root / "manifest.json", self.manifest())

    def shard_lines(self) -> list[dict[str, Any]]:
        """Every pair in the shards listed by the manifest (tests, tools)."""
        out: list[dict[str, Any]] = []
        for s in self.manifest()["shards"]:
            with open(self.root / s["name"]) as f:
                out.extend(json.loads(line) for line in f if line.strip())
        return out


def export(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    since_ns: int,
    until_ns: int,
    shard_max_pairs: int = 10_000,
) -> dict[str, Any]:
    """Copy the published pairs with since <= occurred_at < until into ``out_dir`` (shards + manifest.json)."""
    src = Path(dataset_dir)
    if not (src / "state.sqlite").exists():
        raise FileNotFoundError(f"no dataset at {src} (state.sqlite missing)")
    db = sqlite3.connect(src / "state.sqlite")
    try:
        rows = db.execute(
            "SELECT occurred_ns, reason, json FROM pairs WHERE shard IS NOT NULL AND occurred_ns >= ? "
            "AND occurred_ns < ? ORDER BY occurred_ns, pair_id",
            (since_ns, until_ns),
        ).fetchall()
    finally:
        db.close()
    out = Path(out_dir)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    shards = []
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r[1]] = reasons.get(r[1], 0) + 1
    for i in range(0, len(rows), shard_max_pairs):
        part = rows[i : i + shard_max_pairs]
        name = f"shards/pairs-{i // shard_max_pairs + 1:06d}.jsonl"
        n, size, sha = write_shard(out / name, (r[2] for r in part))
        shards.append(
            {"name": name, "pairs": n, "bytes": size, "sha256": sha, "from": iso(part[0][0]), "to": iso(part[-1][0])}
        )
    manifest = {
        "dataset": "stepaudio-preference-pairs",
        "schema": "stepaudio.logs.v1.PreferencePair",
        "format": "jsonl (protobuf JSON, proto field names)",
        "source": str(src.resolve()),
        "query": {"since": iso(since_ns), "until": iso(until_ns)},
        "counts": {"pairs": len(rows), "shards": len(shards), "by_reason": reasons},
        "time_range": {"from": iso(rows[0][0]) if rows else None, "to": iso(rows[-1][0]) if rows else None},
        "shards": shards,
    }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def dpo_rows(pair_lines: Iterable[str]) -> tuple[list[dict[str, Any]], int]:
    """Rows in the layout preference trainers read (TRL's DPOTrainer, conversational): ``prompt``, ``chosen``,
    ``rejected`` as message lists, plus the pair's id, reason and audio references. Pairs without a chosen reply
    (a rejected-only deaf-hacking example) have no DPO row; their count is returned."""
    rows, skipped = [], 0
    for line in pair_lines:
        p = json.loads(line)
        if "chosen" not in p or "rejected" not in p:
            skipped += 1
            continue
        rows.append({
            "prompt": [{"role": "user", "content": p.get("prompt_text", "")}],
            "chosen": [{"role": "assistant", "content": p["chosen"].get("text", "")}],
            "rejected": [{"role": "assistant", "content": p["rejected"].get("text", "")}],
            "pair_id": p.get("pair_id", ""),
            "reason": p.get("reason", ""),
            "prompt_audio": p.get("prompt_audio", {}).get("uri", ""),
            "chosen_audio": p["chosen"].get("audio", {}).get("uri", ""),
            "rejected_audio": p["rejected"].get("audio", {}).get("uri", ""),
        })
    return rows, skipped


def export_dpo(dataset_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], since_ns: int,
               until_ns: int) -> dict[str, Any]:
    """Export a time range as ``dpo.jsonl`` and ``dpo.parquet`` (see :func:`dpo_rows`) with a manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = Path(dataset_dir)
    if not (src / "state.sqlite").exists():
        raise FileNotFoundError(f"no dataset at {src} (state.sqlite missing)")
    db = sqlite3.connect(src / "state.sqlite")
    try:
        lines = [r[0] for r in db.execute(
            "SELECT json FROM pairs WHERE shard IS NOT NULL AND occurred_ns >= ? AND occurred_ns < ? "
            "ORDER BY occurred_ns, pair_id", (since_ns, until_ns))]
    finally:
        db.close()
    rows, skipped = dpo_rows(lines)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, size, sha = write_shard(out / "dpo.jsonl", (json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows))
    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema([("prompt", message), ("chosen", message), ("rejected", message), ("pair_id", pa.string()),
                        ("reason", pa.string()), ("prompt_audio", pa.string()), ("chosen_audio", pa.string()),
                        ("rejected_audio", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / "dpo.parquet")
    manifest = {
        "dataset": "stepaudio-preference-pairs",
        "format": "TRL DPO (conversational): prompt / chosen / rejected message lists; dpo.jsonl and dpo.parquet",
        "source": str(src.resolve()),
        "query": {"since": iso(since_ns), "until": iso(until_ns)},
        "counts": {"rows": n, "skipped_without_chosen": skipped},
        "files": [{"name": "dpo.jsonl", "bytes": size, "sha256": sha}, {"name": "dpo.parquet"}],
    }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest
