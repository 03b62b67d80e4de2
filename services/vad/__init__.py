"""VAD stage: speech probabilities and speech start/stop events for an audio stream."""
