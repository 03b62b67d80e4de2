"""Every config.pbtxt of the Triton repositories parses as Triton's ModelConfig and is internally consistent.

The committed repository (models/triton/embedded_llm) is read in place; the Step-Audio repositories are generated
from models/trtllm/templates into a temporary folder, as `make triton-repos` and the image build do.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from models.trtllm.make_repo import make_repo

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "models" / "triton"
REPO = Path(tempfile.mkdtemp(prefix="triton-repos-"))
for _profile in ("chat", "tts"):
    make_repo(_profile, REPO)
shutil.copytree(COMMITTED / "embedded_llm", REPO / "embedded_llm", ignore=shutil.ignore_patterns("__pycache__"))
CONFIGS = sorted(REPO.glob("**/config.pbtxt"))


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_there_are_configs() -> None:
    assert any(p.parent.name == "embedded_llm" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.parent.relative_to(REPO)))
def test_config_parses(path: Path) -> None:
    cfg = parse(path)
    assert cfg.name == path.parent.name, "name must match the folder"
    assert cfg.backend or cfg.platform
    assert "${" not in path.read_text(), "unfilled template placeholder"
    for names in ([i.name for i in cfg.input], [o.name for o in cfg.output]):
        assert len(names) == len(set(names)), "duplicate tensor names"
    if cfg.backend == "python":
        assert (path.parent / "1" / "model.py").exists()


def test_llm_contract_matches_trtllm_names() -> None:
    """embedded_llm and the TensorRT-LLM BLS/ensemble models share the request contract."""
    embedded = parse(REPO / "embedded_llm" / "config.pbtxt")
    assert embedded.model_transaction_policy.decoupled
    inputs = {i.name: i for i in embedded.input}
    for name in (
        "text_input",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_words",
        "bad_words",
        "end_id",
        "pad_id",
        "repetition_penalty",
        "random_seed",
    ):
        assert name in inputs, name
    assert {o.name for o in embedded.output} >= {"text_output"}
    for other in ("step_audio_chat", "step_audio_tts"):
        for model in (other, f"{other}_ensemble"):
            cfg = parse(REPO / other / model / "config.pbtxt")
            theirs = {i.name: i for i in cfg.input}
            for name, spec in theirs.items():
                if name in inputs:
                    assert spec.data_type == inputs[name].data_type, f"{model}: {name}"
            assert {"text_input", "max_tokens", "stream", "stop_words", "end_id", "temperature"} <= set(theirs)
            assert "text_output" in {o.name for o in cfg.output}
        bls = parse(REPO / other / other / "config.pbtxt")
        assert bls.model_transaction_policy.decoupled
        assert {i.name for i in bls.input} == set(inputs), "BLS and embedded_llm take the same inputs"
        assert {o.name for o in bls.output} == {o.name for o in embedded.output}


@pytest.mark.parametrize("prefix", ["step_audio_chat", "step_audio_tts"])
def test_trtllm_repository_wiring(prefix: str) -> None:
    repo = REPO / prefix
    trt = parse(repo / f"{prefix}_trtllm" / "config.pbtxt")
    params = {k: v.string_value for k, v in trt.parameters.items()}
    assert trt.backend == "tensorrtllm" and trt.model_transaction_policy.decoupled
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert 0 < float(params["kv_cache_free_gpu_mem_fraction"]) <= 1
    ens = parse(repo / f"{prefix}_ensemble" / "config.pbtxt")
    models = {p.parent.name: parse(p) for p in repo.glob("*/config.pbtxt")}
    produced = {i.name for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        target = models[step.model_name]
        target_inputs = {i.name for i in target.input}
        target_outputs = {o.name for o in target.output}
        assert set(step.input_map) <= target_inputs, step.model_name
        assert set(step.output_map) <= target_outputs, step.model_name
        assert set(step.input_map.values()) <= produced, f"{step.model_name} reads a tensor nobody produced"
        produced |= set(step.output_map.values())
    assert "text_output" in produced
    bls_params = {k: v.string_value for k, v in models[prefix].parameters.items()}
    assert bls_params["tensorrt_llm_model_name"] in models


def test_generated_repositories_are_not_committed() -> None:
    tracked = subprocess.run(["git", "ls-files", "models/triton"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked and all(f.startswith("models/triton/embedded_llm/") for f in tracked), tracked


def test_make_repo_parameters(tmp_path: Path) -> None:
    from models.trtllm.make_repo import make_repo

    repo = make_repo("chat", tmp_path, {"tp_size": "8", "max_batch_size": "32", "enable_kv_cache_reuse": "false"})
    trt = parse(repo / "step_audio_chat_trtllm" / "config.pbtxt")
    params = {k: v.string_value for k, v in trt.parameters.items()}
    assert trt.max_batch_size == 32 and params["gpu_device_ids"] == "0,1,2,3,4,5,6,7"
    assert params["enable_kv_cache_reuse"] == "false"
    with pytest.raises(ValueError, match="unknown parameters"):
        make_repo("chat", tmp_path, {"no_such": "1"})
    with pytest.raises(ValueError, match="kv_cache_free_gpu_mem_fraction"):
        make_repo("tts", tmp_path, {"kv_cache_free_gpu_mem_fraction": "1.5"})
