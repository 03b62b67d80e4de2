"""Start-up checks: a model dir missing files fails with a message naming each one; small pure helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.stepaudio.cosyvoice import cosy_dirs
from models.stepaudio.text_codec import ByteCodec
from services.tts.backends.stepaudio import speed_tag


def test_tokenizer_start_names_missing_file(broken_root: Path) -> None:
    from services.tokenizer.backends.stepaudio import StepAudioDualTokenizer
    from services.tokenizer.settings import TokenizerSettings

    (broken_root / "Step-Audio-Tokenizer" / "linguistic_tokenizer.npy").unlink()
    (broken_root / "Step-Audio-Tokenizer" / "speech_tokenizer_v1.onnx").unlink()
    settings = TokenizerSettings(profile="stepaudio", model_dir=str(broken_root / "Step-Audio-Tokenizer"))
    with pytest.raises(FileNotFoundError) as e:
        StepAudioDualTokenizer(settings)
    msg = str(e.value)
    assert "Step-Audio-Tokenizer/linguistic_tokenizer.npy" in msg and "speech_tokenizer_v1.onnx" in msg
    assert "stepaudio models verify" in msg


def test_tts_start_names_missing_file(broken_root: Path) -> None:
    from services.tts.backends.stepaudio import StepAudioTts, StepAudioTtsOptions
    from services.tts.settings import TtsSettings

    (broken_root / "Step-Audio-TTS-3B" / "CosyVoice-300M-25Hz-Music" / "flow.pt").unlink()
    (broken_root / "Step-Audio-TTS-3B" / "config.json").unlink()
    with pytest.raises(FileNotFoundError) as e:
        StepAudioTts(TtsSettings(profile="stepaudio", model_dir=str(broken_root)), StepAudioTtsOptions(device="cpu"))
    msg = str(e.value)
    assert "CosyVoice-300M-25Hz-Music/flow.pt" in msg and "Step-Audio-TTS-3B/config.json" in msg


def test_vocoder_start_names_missing_file(broken_root: Path) -> None:
    from services.vocoder.backends.hift import HiftVocoder
    from services.vocoder.settings import VocoderSettings

    cosy = broken_root / "Step-Audio-TTS-3B" / "CosyVoice-300M-25Hz"
    (cosy / "hift.pt").unlink()
    with pytest.raises(FileNotFoundError, match="CosyVoice-300M-25Hz/hift.pt"):
        HiftVocoder(VocoderSettings(profile="stepaudio", model_dir=str(cosy), device="cpu"))


def test_tts_start_without_voices(broken_root: Path, tmp_path: Path) -> None:
    from services.tts.backends.stepaudio import StepAudioTts, StepAudioTtsOptions
    from services.tts.settings import TtsSettings

    empty = tmp_path / "novoices"
    with pytest.raises(FileNotFoundError, match="no voices"):
        StepAudioTts(TtsSettings(profile="stepaudio", model_dir=str(broken_root)),
                     StepAudioTtsOptions(device="cpu", voices_dir=str(empty)))


def test_helpers() -> None:
    assert speed_tag(1.0) == "" and speed_tag(0.7) == "慢速2" and speed_tag(1.2) == "快速1"
    assert ByteCodec(256).encode("é") == [256 + 0xC3, 256 + 0xA9]
    root = Path("/m")
    assert cosy_dirs(root) == (root / "Step-Audio-TTS-3B/CosyVoice-300M-25Hz",
                               root / "Step-Audio-TTS-3B/CosyVoice-300M-25Hz-Music")
    assert cosy_dirs(root / "Step-Audio-TTS-3B/CosyVoice-300M-25Hz-Music")[0].name == "CosyVoice-300M-25Hz"
