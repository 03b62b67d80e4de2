"""Conversation-log events: redaction, durable spool, non-blocking Kafka producer (see producer.py)."""

from services.convlog.audio_store import AudioClip, AudioStore, LocalAudioStore
from services.convlog.producer import ConversationLogger
from services.convlog.settings import ConvlogSettings

__all__ = ["AudioClip", "AudioStore", "ConversationLogger", "ConvlogSettings", "LocalAudioStore"]
