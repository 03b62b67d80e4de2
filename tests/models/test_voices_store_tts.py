"""Voice registry, TTS-3B prompt building / tag parsing, model store and CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from models.stepaudio import store
from models.stepaudio.cli import register
from models.stepaudio.tokenizer import DualTokenizer
from models.stepaudio.tts_frontend import (
    SYS_PROMPT_RAP,
    VALID_TAGS,
    build_prompt,
    parse_instructions,
    plan_clone,
    plan_registered,
)
from models.stepaudio.voices import CampPlus, VoiceRegistry, nonsilent_span, trim_prompt
from tests.models.conftest import test_audio


class CharEncoder:
    """Stand-in text tokenizer: one id per character (ids 100 + ord % 50000)."""

    def encode(self, text: str) -> list[int]:
        return [100 + ord(c) for c in text]


def test_voice_registry_roundtrip(tmp_path: Path, dual_tokenizer: DualTokenizer, cosy_dir: Path) -> None:
    reg = VoiceRegistry(tmp_path / "voices")
    camp = CampPlus(cosy_dir / "campplus.onnx")
    e = reg.register("Tingting", test_audio(3.0, sr=24000), 24000, "你好，我是婷婷。", dual_tokenizer, camp)
    assert e.embedding.shape == (192,) and e.prompt_mel.shape[1] == 80
    assert e.prompt_mel.shape[0] == pytest.approx(3.0 * 22050 / 256, abs=2)
    # tokens from the trimmed prompt: 0.05 s before the speech + the speech (240-sample steps) + 0.22 s
    assert len(e.prompt_audio_ids) == pytest.approx(3.27 * 41.67, abs=6)
    reg2 = VoiceRegistry(tmp_path / "voices")
    e2 = reg2.get("Tingting")
    assert e2.prompt_audio_ids == e.prompt_audio_ids and e2.prompt_text == e.prompt_text
    assert np.array_equal(e2.prompt_mel, e.prompt_mel) and np.array_equal(e2.embedding, e.embedding)
    assert "Tingting" in reg2 and reg2.names() == ["Tingting"]
    with pytest.raises(KeyError, match="Tingting"):
        reg2.get("nobody")
    with pytest.raises(ValueError):
        reg.register("x", test_audio(1.0), 16000, "  ", dual_tokenizer, camp)


def test_parse_instructions() -> None:
    ins = parse_instructions("(高兴1)（粤语）(快速1)今天天气好")
    assert ins.tags == ("高兴1", "粤语", "快速1") and ins.text == "今天天气好"
    assert ins.emotion == "高兴1" and ins.language == "粤语" and ins.speed == "快速1" and ins.music is None
    assert parse_instructions("（RAP）yo").music == "RAP"
    assert parse_instructions("no tags").tags == ()
    with pytest.raises(ValueError) as exc:
        parse_instructions("(开心)hi")
    assert "开心" in str(exc.value) and all(t in str(exc.value) for t in VALID_TAGS)
    with pytest.raises(ValueError, match="conflicting"):
        parse_instructions("(高兴1)(悲伤1)hi")


def test_build_prompt_layout() -> None:
    enc = CharEncoder()
    ids = build_prompt(enc, "(高兴1)你好", "提示", [65536, 66560, 65537], speaker="Tingting")
    assert ids[:3] == [1, 4, 1]
    assert ids[-len(enc.encode("assistant\n")) - 2 :] == [4, 1, *enc.encode("assistant\n")]
    assert ids.count(3) == 4 and ids.count(4) == 5 and ids.count(1) == 6
    seg = ids[ids.index(65536) - len(enc.encode("assistant\n")) - 2 :]
    assert seg[: len(enc.encode("assistant\n")) + 2] == [4, 1, *enc.encode("assistant\n")]
    assert "[Tingting]" in "".join(chr(i - 100) for i in ids if 100 <= i < 65536)


class BosEncoder(CharEncoder):
    """The reference's tokenizer behaviour: every ``encode()`` starts with BOS (1)."""

    def encode(self, text: str) -> list[int]:
        return [1, *super().encode(text)]


def reference_tokenize(
    enc: BosEncoder, sys_prompt: str, text: str, prompt_text: str, prompt_code: list[int]
) -> list[int]:
    """The reference's ``StepAudioTTS.tokenize`` (stepfun-ai/Step-Audio a52b94d, tts.py), restated call by call."""
    history = [1, 4, *enc.encode(f"system\n{sys_prompt}"), 3]
    prefix = enc.encode("\n")
    prompt_tokens = enc.encode("\n" + prompt_text)[len(prefix):]
    target_tokens = enc.encode("\n" + text)[len(prefix):]
    q, a = enc.encode("human\n"), enc.encode("assistant\n")
    return history + [4, *q, *prompt_tokens, 3, 4, *a, *prompt_code, 3, 4, *q, *target_tokens, 3, 4, *a]


@pytest.mark.parametrize(("text", "speaker"), [("(高兴1)你好", "Tingting"), ("Hello there.", "Tingting"),
                                               ("(RAP)yo yo", "Tingting"), ("clone me", None)])
def test_prompt_ids_equal_the_reference_tokenizer_calls(text: str, speaker: str | None) -> None:
    from models.stepaudio.tts_frontend import parse_instructions, system_prompt

    code = [65536, 66560, 65537]
    ours = build_prompt(CharEncoder(), text, "提示文本", code, speaker=speaker)
    sys_text = system_prompt(parse_instructions(text), speaker)
    assert ours == reference_tokenize(BosEncoder(), sys_text, text, "提示文本", code)


class _Entry:
    def __init__(self, text: str) -> None:
        self.prompt_text = text
        self.prompt_audio_ids = [65540, 65541, 66600, 66601, 66602]


class _Reg:
    def __init__(self) -> None:
        self.d = {"Tingting": _Entry("a"), "TingtingRAP": _Entry("b")}

    def __contains__(self, n: object) -> bool:
        return n in self.d

    def get(self, n: str) -> _Entry:
        return self.d[n]

    def names(self) -> list[str]:
        return list(self.d)


def test_plans() -> None:
    enc = CharEncoder()
    p = plan_registered(enc, "(RAP)走起", "Tingting", _Reg())
    assert p.voice_key == "TingtingRAP" and p.flow_set == "music"
    text = "".join(chr(i - 100) for i in p.input_ids if 100 <= i < 65536)
    assert SYS_PROMPT_RAP in text
    with pytest.raises(ValueError, match="哼唱"):
        plan_registered(enc, "(哼唱)啦啦", "Tingting", _Reg())
    with pytest.raises(ValueError, match="unknown voice"):
        plan_registered(enc, "hi", "Bob", _Reg())
    c = plan_clone(enc, "hello", "prompt words", [65536, 65537, 66560, 66561, 66562])
    assert c.flow_set == "common" and c.voice_key == ""
    with pytest.raises(ValueError, match="transcript"):
        plan_clone(enc, "hello", "", [])


def test_store_verify(tmp_path: Path) -> None:
    problems = store.verify(tmp_path, service="vocoder")
    assert any("CosyVoice-300M-25Hz/flow.pt" in p for p in problems)
    assert all("Step-Audio-Chat" not in p for p in problems)
    for local_dir, f in store.required_files("vocoder"):
        p = tmp_path / local_dir / f["path"]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert store.verify(tmp_path, service="vocoder") == []
    chat = tmp_path / "Step-Audio-Chat"
    chat.mkdir()
    (chat / "config.json").write_text("{}")
    (chat / "tokenizer.model").write_text("x")
    idx = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (chat / "model.safetensors.index.json").write_text(json.dumps(idx))
    (chat / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert store.verify(tmp_path, service="llm") == [
        f"missing shard {chat / 'model-00002-of-00002.safetensors'} (listed in model.safetensors.index.json)"
    ]
    assert store.verify(tmp_path / "nope")[0].endswith("does not exist")
    with pytest.raises(ValueError, match="unknown service"):
        store.verify(tmp_path, service="gpu")


def test_cli_register(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "verify", str(tmp_path), "--service", "tokenizer"])
    assert args.func(args) == 1
    assert "linguistic_tokenizer.npy" in capsys.readouterr().err
    args = parser.parse_args(["models", "fetch", str(tmp_path / "dl")])
    assert args.dest == str(tmp_path / "dl")  # not executed: fetch downloads


def test_prompt_trim_as_the_reference() -> None:
    sr = 16000
    speech = test_audio(1.0, sr=sr)
    x = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(12800, np.float32)])
    start, end = nonsilent_span(x)
    assert abs(start - 8000) <= 512 and abs(end - 24000) <= 512
    y = trim_prompt(x)
    steps = int(np.ceil((end - start) / 240))
    assert y.size == steps * 240 + int(0.27 * sr)
    lead = int(np.flatnonzero(np.abs(y) > 1e-3)[0])
    assert abs(lead - (800 + 8000 - start)) <= 2  # 0.05 s kept before the speech
    # speech at the very start: zero padded in front, never cut
    z = trim_prompt(speech)
    assert z.size == int(np.ceil(speech.size / 240)) * 240 + int(0.27 * sr) and not z[:800].any()
    assert nonsilent_span(np.zeros(4000, np.float32)) == (0, 4000)  # as librosa: all-silent keeps everything
