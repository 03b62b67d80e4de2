"""Fixtures for the conversation-log tests: a real Apache Kafka 4.x broker (KRaft) via scripts/kafka.sh."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = str(ROOT / "scripts" / "kafka.sh")

logging.getLogger("kafka").setLevel(logging.CRITICAL)  # reconnect noise while the broker is down on purpose


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        if port >= 65000:
            continue
        try:
            with socket.socket() as b:
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class Broker:
    """A one-node Kafka started with scripts/kafka.sh; stop()/start() keep the data dir."""

    def __init__(self, port: int, data: Path) -> None:
        self.port = port
        self.data = data
        self.bootstrap = f"127.0.0.1:{port}"

    def start(self) -> None:
        subprocess.run(
            [KAFKA_SH, "start", str(self.port), str(self.data)], check=True, timeout=120, stdout=subprocess.DEVNULL
        )

    def stop(self) -> None:
        subprocess.run([KAFKA_SH, "stop", str(self.data)], check=True, timeout=60, stdout=subprocess.DEVNULL)

    def topics(self) -> tuple[str, str]:
        """Create a fresh events topic + DLQ topic pair (tests share the broker, not topics)."""
        from services.convlog.topics import ensure_topics, specs

        tag = uuid.uuid4().hex[:8]
        topic, dlq = f"test.{tag}.conversation.v1", f"test.{tag}.conversation.dlq.v1"
        ensure_topics(self.bootstrap, specs(local=True, topic=topic, dlq_topic=dlq))
        return topic, dlq


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("java") is None:
        pytest.skip("java not found: the Kafka tests need Java 17+ (apt-get install -y openjdk-17-jre-headless)")
    subprocess.run([KAFKA_SH, "install"], check=True, timeout=900, stdout=subprocess.DEVNULL)
    broker = Broker(_free_port_pair(), tmp_path_factory.mktemp("kafka-data"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
