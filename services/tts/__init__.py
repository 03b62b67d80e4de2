"""TTS stage: text (whole or streamed phrase by phrase) to speech."""
