"""The conversation gateway: per-session controller that drives VAD, ASR, LLM, tools and TTS."""
