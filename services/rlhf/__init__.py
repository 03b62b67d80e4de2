"""RLHF preference collector: Kafka consumer group -> preference pairs dataset (JSONL shards + manifest)."""
