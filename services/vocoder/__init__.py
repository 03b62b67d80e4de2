"""Vocoder stage: 80-bin log-mel frames to a 22,050 Hz waveform, streamed."""
