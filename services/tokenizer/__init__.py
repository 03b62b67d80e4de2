"""Tokenizer stage: transcripts (Whisper in the embedded profile) and Step-Audio dual tokens (stepaudio profile)."""
