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

import dataclasses
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.kit.audio import read_wav, write_wav
from tests.models.conftest import (
    make_campplus_onnx,
    make_flow,
    make_hift,
    make_step1,
    make_tokenizer_dir,
    tiny_flow_config,
    tiny_hift_config,
)

DATA = Path(__file__).resolve().parents[1] / "data"
TTS_ENV = {
    "STEPAUDIO_TTS_MAX_NEW_TOKENS": "40",  # a random tiny LM never says EOT: cap each phrase at ~1 s of tokens
    "STEPAUDIO_TTS_SEED": "0",
    "STEPAUDIO_TTS_DEVICE": "cpu",
}


def make_cosy_dir(d: Path, seed: int) -> Path:
    make_flow(d / "flow.pt", seed)
    make_hift(d / "hift.pt", seed)
    make_campplus_onnx(d / "campplus.onnx", seed)
    (d / "cosyvoice.yaml").write_text("# tiny test config: sizes in model_config.json\n", encoding="utf-8")
    cfg = {"flow": dataclasses.asdict(tiny_flow_config()), "hift": dataclasses.asdict(tiny_hift_config())}
    (d / "model_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return d


def make_models_root(root: Path) -> Path:
    """Everything the tokenizer, tts and vocoder services need, in the published layout."""
    make_tokenizer_dir(root / "Step-Audio-Tokenizer")
    tts = root / "Step-Audio-TTS-3B"
    make_step1(tts)
    cfg = json.loads((tts / "config.json").read_text(encoding="utf-8"))
    cfg["stepaudio_text_encoder"] = {"type": "bytes", "offset": 256}
    (tts / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (tts / "tokenizer.model").write_bytes(b"placeholder: the byte encoder in config.json is used")
    make_cosy_dir(tts / "CosyVoice-300M-25Hz", 0)
    make_cosy_dir(tts / "CosyVoice-300M-25Hz-Music", 1)
    voices = root / "voices"
    voices.mkdir()
    audio, rate = read_wav(DATA / "question.wav")
    transcript = (DATA / "question.txt").read_text(encoding="utf-8").strip()
    for name in ("joe", "joeRAP"):
        write_wav(voices / f"{name}.wav", audio[: int(2.5 * rate)], rate)
        (voices / f"{name}.txt").write_text(transcript, encoding="utf-8")
    return root


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

