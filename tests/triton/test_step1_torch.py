"""The torch Step1 Triton model (models/trtllm/templates/step1_torch) on a real tritonserver with tiny checkpoints:
the shared contract for text (Step-Audio-Chat) and ids (TTS-3B), the audio-id mask, cancellation, bad input, and
the load-time probe that refuses a model computing the wrong (linear) ALiBi bias."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as aio
from tritonclient.utils import InferenceServerException

from models.stepaudio.audio_tokens import AUDIO_VOCAB_OFFSET
from models.stepaudio.probe import PROBE_FILE, Probe, check, reference_probe
from models.stepaudio.step1 import Step1ForCausalLM
from models.stepaudio.tiny import make_chat_step1, make_step1
from models.trtllm.make_repo import make_torch_model
from services.kit.triton import TritonPool, token_inputs
from services.llm.contract import GenerationParams, build_inputs, text_of
from stepaudio.tritonserver import TritonHandle, start_triton

PROMPT = "<|BOT|>human\n<audio_5><audio_1500><audio_77>hello<|EOT|><|BOT|>assistant\n"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("step1")
    chat, tts = root / "Step-Audio-Chat", root / "Step-Audio-TTS-3B"
    reference_probe(make_chat_step1(chat)).save(chat / PROBE_FILE)
    make_step1(tts)
    import json

    cfg = json.loads((tts / "config.json").read_text())
    cfg["stepaudio_text_encoder"] = {"type": "bytes", "offset": 256}
    (tts / "config.json").write_text(json.dumps(cfg))
    reference_probe(Step1ForCausalLM.from_pretrained(tts)).save(tts / PROBE_FILE)
    return {"chat": chat, "tts": tts}


@pytest.fixture(scope="module")
def server(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHandle]:
    repo = tmp_path_factory.mktemp("repo")
    # the chat checkpoint served with stock TensorRT-LLM's linear ALiBi: must never load
    wrong = make_torch_model("chat", repo, {"checkpoint_dir": str(checkpoints["chat"]), "device": "cpu",
                                            "alibi_bias": "linear"})
    wrong.rename(repo / "chat_linear_alibi")
    cfg = repo / "chat_linear_alibi" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('name: "step_audio_chat"', 'name: "chat_linear_alibi"'))
    make_torch_model("chat", repo, {"checkpoint_dir": str(checkpoints["chat"]), "device": "cpu", "threads": "1"})
    make_torch_model("tts", repo, {"checkpoint_dir": str(checkpoints["tts"]), "device": "cpu", "threads": "1",
                                   "slots": "2"})
    with start_triton(repo, models=["step_audio_chat", "step_audio_tts"], ready_timeout=240) as handle:
        yield handle


def test_probe_separates_sqrt_from_linear_bias(checkpoints: dict[str, Path]) -> None:
    model = Step1ForCausalLM.from_pretrained(checkpoints["chat"])
    probe = Probe.load(checkpoints["chat"] / PROBE_FILE)

    def served(ids: list[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return model(torch.tensor([ids]))[0][0].numpy()

    same = check(served, probe)
    assert same.ok and same.max_diff < 1e-3, same
    model.alibi_bias = "linear"
    wrong = check(served, probe)
    assert not wrong.ok and wrong.max_diff > 1.0, wrong
    assert "does NOT match" in wrong.message("engine") and "sqrt" in wrong.message("engine")


async def test_wrong_bias_is_refused_at_load_with_the_reason(server: TritonHandle) -> None:
    client = aio.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as err:
            await client.load_model("chat_linear_alibi")
        assert "does NOT match the torch Step1 reference" in str(err.value), err.value
        assert "linear" in str(err.value)
        assert not await client.is_model_ready("chat_linear_alibi")
        assert await client.is_model_ready("step_audio_chat")  # the server and the good model go on
    finally:
        await client.close()


async def test_chat_text_stream_with_audio_tokens_in_the_prompt(server: TritonHandle) -> None:
    pool = TritonPool([server.grpc_url])
    try:
        params = GenerationParams(max_tokens=30, temperature=0.7, seed=3)
        pieces, finals = [], []
        async for result, _ in pool.stream("step_audio_chat", build_inputs(PROMPT, params), "chat-1", 60):
            pieces.append(text_of(result))
            if result.as_numpy("finish_reason") is not None:
                finals.append(result)
        text = "".join(pieces)
        assert text and set(text) <= set("abcdefghijklmnopqrstuvwxyz ."), text
        assert len(finals) == 1
        # BOS, BOT, "human\n", 3 audio ids, "hello", EOT, BOT, "assistant\n"
        assert int(finals[0].as_numpy("num_input_tokens").reshape(-1)[0]) == 28
        again = []
        async for result, _ in pool.stream("step_audio_chat", build_inputs(PROMPT, params), "chat-2", 60):
            again.append(text_of(result))
        assert "".join(again) == text  # same seed, same text
    finally:
        await pool.close()


async def test_tts_ids_are_audio_only_and_concurrent_requests_overlap(server: TritonHandle) -> None:
    pool = TritonPool([server.grpc_url])
    prompt = [1, 4, 1, *[256 + b for b in b"human\nhi"], 3, 4, 1, *[256 + b for b in b"assistant\n"]]

    async def one(seed: int) -> list[int]:
        ids: list[int] = []
        async for result, _ in pool.stream("step_audio_tts", token_inputs(prompt, 40, 0.7, 1.0, 50, seed),
                                           f"tts-{seed}", 60):
            out = result.as_numpy("output_ids")
            ids.extend(int(i) for i in out.reshape(-1))
        return ids

    try:
        runs = await asyncio.gather(one(1), one(2))
        for ids in runs:
            assert 0 < len(ids) <= 40
            assert all(AUDIO_VOCAB_OFFSET <= i < AUDIO_VOCAB_OFFSET + 5120 for i in ids), ids
        assert runs[0] != runs[1]
    finally:
        await pool.close()


async def test_cancel_and_bad_requests(server: TritonHandle) -> None:
    from services.kit.errors import StageError

    pool = TritonPool([server.grpc_url])
    try:
        stream = pool.stream("step_audio_tts", token_inputs([1, 4, 1], 400, 0.7, 1.0, 50, 1), "tts-cancel", 60)
        await stream.__anext__()
        await stream.aclose()  # cancels the request on the server
        with pytest.raises(StageError, match="outside the vocabulary"):
            async for _ in pool.stream("step_audio_tts", token_inputs([1, 999999], 5, 0.7, 1.0, 50), "bad-1", 30):
                pass
        with pytest.raises(StageError, match="exactly one of text_input"):
            async for _ in pool.stream("step_audio_chat", token_inputs([1, 4], 5, 0.7, 1.0, 50)
                                       + build_inputs("x", GenerationParams(max_tokens=5))[:1], "bad-2", 30):
                pass
        # the server still serves after both
        ids = []
        async for result, _ in pool.stream("step_audio_tts", token_inputs([1, 4, 1], 5, 0.7, 1.0, 50, 2), "ok", 30):
            ids.extend(result.as_numpy("output_ids").reshape(-1).tolist())
        assert ids
    finally:
        await pool.close()
