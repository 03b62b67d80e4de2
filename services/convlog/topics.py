"""Create the conversation-log topics (``python -m services.convlog.topics --bootstrap HOST:PORT``).

Topic settings (documented in docs/LOGS.md; defaults are for production, ``--local`` for a one-node broker):

| topic | partitions | replication | min.insync | retention | cleanup |
|---|---|---|---|---|---|
| stepaudio.conversation.v1 | 12 | 3 | 2 | 14 days | delete |
| stepaudio.conversation.dlq.v1 | 3 | 3 | 2 | 30 days | delete |

Keys are session ids; compaction is off on purpose: each event is a fact, not the latest state of a key, so
compaction would throw away every turn but the last of a session.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """Desired settings of one topic."""

    name: str
    partitions: int
    replication: int
    retention_ms: int
    min_insync: int

    def configs(self) -> dict[str, str]:
        """Topic-level configs."""
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(self.min_insync),
            "compression.type": "producer",
            "max.message.bytes": str(1 << 20),
            "message.timestamp.type": "CreateTime",
        }


def specs(
    *,
    local: bool,
    partitions: int | None = None,
    topic: str = "stepaudio.conversation.v1",
    dlq_topic: str = "stepaudio.conversation.dlq.v1",
) -> list[TopicSpec]:
    """Topic specs for production (local=False) or a one-node dev/test broker (local=True)."""
    rf, isr = (1, 1) if local else (3, 2)
    return [
        TopicSpec(topic, partitions or (3 if local else 12), rf, 14 * DAY_MS, isr),
        TopicSpec(dlq_topic, 1 if local else 3, rf, 30 * DAY_MS, isr),
    ]


def ensure_topics(bootstrap: str, topic_specs: list[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left as they are."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="stepaudio-topics", request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        existing = set(admin.list_topics())
        todo = [t for t in topic_specs if t.name not in existing]
        created = []
        for t in todo:
            try:
                admin.create_topics(
                    [NewTopic(t.name, t.partitions, t.replication, topic_configs=t.configs())],
                    timeout_ms=int(timeout_s * 1000),
                )
                created.append(t.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers host:port[,host:port]")
    ap.add_argument("--local", action="store_true", help="one-node broker: replication 1, fewer partitions")
    ap.add_argument("--partitions", type=int, default=None, help="partitions of the events topic")
    a = ap.parse_args(argv)
    ts = specs(local=a.local, partitions=a.partitions)
    created = ensure_topics(a.bootstrap, ts)
    for t in ts:
        state = "created" if t.name in created else "exists"
        print(f"{t.name}\t{state}\tpartitions={t.partitions}\treplication={t.replication}\t{t.configs()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
