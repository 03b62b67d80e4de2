"""NVIDIA Riva-compatible speech APIs (nvidia.riva.asr.RivaSpeechRecognition, nvidia.riva.tts.RivaSpeechSynthesis)
backed by the platform's own stages, so Riva clients (nvidia-riva-client, Pipecat's and LiveKit's Riva services)
work unchanged."""
