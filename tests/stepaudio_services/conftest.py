"""A tiny models root in the real ``stepaudio models fetch`` layout, and the tokenizer, TTS and vocoder services
started in-process (profile=stepaudio, port 0) on it.

Layout built here (random tiny weights from tests/models builders)::

    root/Step-Audio-Tokenizer/{linguistic_tokenizer.npy, speech_tokenizer_v1.onnx, dengcunqin/.../model.pt ...}
    root/Step-Audio-TTS-3B/{config.json, model.safetensors.index.json + shards, tokenizer.model (placeholder)}
    root/Step-Audio-TTS-3B/CosyVoice-300M-25Hz{,-Music}/{cosyvoice.yaml, flow.pt, hift.pt, campplus.onnx,
                                                        model_config.json (tiny sizes)}
    root/voices/{joe,joeRAP}.{wav,txt}   registered by the TTS service at start
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from models.stepaudio.tiny import make_tiny_store
from services.kit.audio import read_wav

DATA = Path(__file__).resolve().parents[1] / "data"
TTS_ENV = {
    "STEPAUDIO_TTS_MAX_NEW_TOKENS": "40",  # a random tiny LM never says EOT: cap each phrase at ~1 s of tokens
    "STEPAUDIO_TTS_SEED": "0",
    "STEPAUDIO_TTS_DEVICE": "cpu",
}


def make_models_root(root: Path) -> Path:
    """Everything the tokenizer, tts and vocoder services need, in the published layout (question.wav voices)."""
    audio, rate = read_wav(DATA / "question.wav")
    transcript = (DATA / "question.txt").read_text(encoding="utf-8").strip()
    return make_tiny_store(root, voice=(audio[: int(2.5 * rate)], rate, transcript))


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models_root(tmp_path_factory.mktemp("models"))


@pytest.fixture
def broken_root(tmp_path: Path, models_root: Path) -> Path:
    """A copy of the models root (weights symlinked) that tests may delete files from."""
    dst = tmp_path / "models"
    shutil.copytree(models_root, dst, copy_function=os.symlink)
    return dst


@pytest.fixture(scope="session")
async def sa_stack(models_root: Path) -> AsyncIterator[dict[str, object]]:
    """Tokenizer, TTS and vocoder servers (stepaudio profile) with channels to each."""
    from services.tokenizer.__main__ import build as build_tokenizer
    from services.tokenizer.settings import TokenizerSettings
    from services.tts.__main__ import build as build_tts
    from services.tts.settings import TtsSettings
    from services.vocoder.__main__ import build as build_vocoder
    from services.vocoder.settings import VocoderSettings
    from stepaudio.tokenizer.v1 import tokenizer_pb2_grpc
    from stepaudio.tts.v1 import tts_pb2_grpc
    from stepaudio.vocoder.v1 import vocoder_pb2_grpc

    common = dict(host="127.0.0.1", port=0, profile="stepaudio", log_json=False)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in TTS_ENV.items():
            mp.setenv(k, v)
        servers = [
            build_tokenizer(TokenizerSettings(**common, model_dir=str(models_root / "Step-Audio-Tokenizer"))),
            build_tts(TtsSettings(**common, model_dir=str(models_root), default_voice="joe")),
            build_vocoder(VocoderSettings(
                **common, device="cpu", model_dir=str(models_root / "Step-Audio-TTS-3B" / "CosyVoice-300M-25Hz")
            )),
        ]
    from services.kit.clients import channel

    ports = [await s.start() for s in servers]
    channels = [channel(f"127.0.0.1:{p}") for p in ports]
    yield {
        "tokenizer": tokenizer_pb2_grpc.TokenizerServiceStub(channels[0]),
        "tts": tts_pb2_grpc.TtsServiceStub(channels[1]),
        "vocoder": vocoder_pb2_grpc.VocoderServiceStub(channels[2]),
        "tts_backend": servers[1].specs[0].servicer.backend,
    }
    for ch in channels:
        await ch.close()
    for s in servers:
        await s.stop(0)

