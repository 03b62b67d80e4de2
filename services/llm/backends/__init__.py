"""LLM backends: both profiles talk to Triton (embedded_llm on CPU, step_audio_chat on TensorRT-LLM)."""

from services.llm.backends.base import GenerationChunk, LlmBackend
from services.llm.settings import LlmSettings


def create_backend(settings: LlmSettings) -> LlmBackend:
    """The Triton backend over the configured endpoints."""
    from services.llm.backends.triton import TritonBackend

    urls = [u.strip() for u in settings.triton_urls.split(",") if u.strip()]
    return TritonBackend(
        urls, cooldown_s=settings.endpoint_cooldown_s, first_token_timeout_s=settings.first_token_timeout_s
    )


__all__ = ["GenerationChunk", "LlmBackend", "create_backend"]
