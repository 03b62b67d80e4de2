"""Generate a Triton model repository for a Step1 model (Step-Audio-Chat or TTS-3B) from models/trtllm/templates.

Two backends behind one tensor contract (the inputs/outputs of TensorRT-LLM's ``tensorrt_llm_bls`` model):

* ``--backend trtllm`` (production, GPU): five Triton models, below.
* ``--backend torch`` (tiny checkpoints on CPU for tests, CI and laptops; the fallback on GPU): one python model
  ``<output>/<name>`` running the project's torch Step1 (templates/step1_torch), parameters ``checkpoint_dir``,
  ``output_vocab`` (text | audio), ``repetition_guard``, ``slots``, ``device``, ``threads``, ``alibi_bias``,
  ``probe_tolerance``, ``default_max_tokens``, ``max_max_tokens``. It proves itself against the stored probe at load
  (models.stepaudio.probe).

One TensorRT-LLM repository per model (``models/triton/<name>/``), holding five Triton models::

    <name>                  python BLS, decoupled: the entry point (embedded_llm's tensor contract)
    <name>_preprocessing    python: Step1 tokenizer, <audio_X> -> 65536 + X, stop/bad word lists
    <name>_trtllm           tensorrtllm backend: inflight fused batching, paged KV cache
    <name>_postprocessing   python: ids -> text
    <name>_ensemble         ensemble of the three above (alternative entry point, text_output only)

Parameters (``--set key=value`` or the named flags; defaults per profile, see PROFILES):

    tp_size                        tensor-parallel size the engine was built with (documentation + gpu_device_ids)
    gpu_device_ids                 GPUs of this instance, e.g. "0,1,2,3" (default: 0..tp_size-1)
    max_batch_size                 Triton max batch = the engine's --max_batch_size
    kv_cache_free_gpu_mem_fraction share of free GPU memory (after weights) for the paged KV cache
    max_tokens_in_paged_kv_cache   hard cap on KV cache tokens ("" = by fraction)
    enable_kv_cache_reuse          reuse KV blocks of shared prompt prefixes (multi-turn, system prompt, voices);
                                   the engine needs --use_paged_context_fmha enable
    enable_chunked_context         split long prefills into chunks interleaved with decoding (engine: paged
                                   context FMHA); keeps time-to-first-token of other streams low
    max_queue_delay_microseconds   how long the dynamic batcher waits to fill a batch (0 for lowest latency)
    batch_scheduler_policy         guaranteed_no_evict (never pauses a started request) | max_utilization
    batching_strategy              inflight_fused_batching (default) | v1
    cancellation_check_period_ms   how often the backend checks for cancelled requests
    engine_dir / tokenizer_dir     where the engine (trtllm-build output) and the HF tokenizer are inside the container
    *_instance_count               python model instances (CPU)

    python -m models.trtllm.make_repo --profile chat            # -> models/triton/step_audio_chat
    python -m models.trtllm.make_repo --backend torch --profile chat --set checkpoint_dir=DIR/Step-Audio-Chat
    python -m models.trtllm.make_repo --profile tts --set max_batch_size=32 --output /tmp/repo
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
DEFAULT_OUT = HERE.parent / "triton"

# template folder -> model name suffix
MODELS = {
    "tensorrt_llm_bls": "",
    "preprocessing": "_preprocessing",
    "tensorrt_llm": "_trtllm",
    "postprocessing": "_postprocessing",
    "ensemble": "_ensemble",
}
PYTHON_MODELS = ("tensorrt_llm_bls", "preprocessing", "postprocessing")

COMMON = {
    "batching_strategy": "inflight_fused_batching",
    "kv_cache_free_gpu_mem_fraction": "0.9",
    "max_tokens_in_paged_kv_cache": "",
    "enable_kv_cache_reuse": "true",
    "enable_chunked_context": "true",
    "max_queue_delay_microseconds": "0",
    "cancellation_check_period_ms": "20",
    "bls_instance_count": "1",
    "preprocessing_instance_count": "2",
    "postprocessing_instance_count": "2",
    "gpu_device_ids": "",
}

PROFILES: dict[str, dict[str, str]] = {
    # Step-Audio-Chat 130B: 88 layers, 12288 hidden, 96 heads / 8 KV groups. bf16 weights ~264 GB -> TP 4 on
    # 4x80 GB leaves ~50 GB for KV (~0.34 MB/token at TP 1 -> ~150k tokens): 16 concurrent replies of 4-8k context.
    "chat": {
        "prefix": "step_audio_chat",
        "tp_size": "4",
        "max_batch_size": "16",
        "batch_scheduler_policy": "guaranteed_no_evict",
        "engine_dir": "/models/engines/step_audio_chat/tp4",
        "tokenizer_dir": "/models/Step-Audio-Chat",
        "default_max_tokens": "2048",
        "max_max_tokens": "8192",
    },
    # Step-Audio-TTS-3B: 32 layers, 3072 hidden, 48 heads / 4 KV groups; 7 GB bf16, KV ~32 KB/token: one GPU,
    # many concurrent syntheses; a reply of ~40 s of audio is ~1700 tokens.
    "tts": {
        "prefix": "step_audio_tts",
        "tp_size": "1",
        "max_batch_size": "64",
        "batch_scheduler_policy": "max_utilization",
        "engine_dir": "/models/engines/step_audio_tts/tp1",
        "tokenizer_dir": "/models/Step-Audio-TTS-3B",
        "default_max_tokens": "4096",
        "max_max_tokens": "8192",
    },
}


BACKENDS = ("trtllm", "torch")
TORCH_COMMON = {"device": "auto", "threads": "0", "alibi_bias": "sqrt", "probe_tolerance": "0.15"}
TORCH_PROFILES: dict[str, dict[str, str]] = {
    "chat": {"prefix": "step_audio_chat", "checkpoint_dir": "/models/Step-Audio-Chat", "output_vocab": "text",
             "repetition_guard": "false", "slots": "4", "default_max_tokens": "2048", "max_max_tokens": "8192"},
    "tts": {"prefix": "step_audio_tts", "checkpoint_dir": "/models/Step-Audio-TTS-3B", "output_vocab": "audio",
            "repetition_guard": "true", "slots": "8", "default_max_tokens": "4096", "max_max_tokens": "8192"},
}


def torch_values_for(profile: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Parameters of the torch Step1 model for ``profile`` (chat | tts)."""
    if profile not in TORCH_PROFILES:
        raise ValueError(f"unknown profile {profile!r}: use one of {sorted(TORCH_PROFILES)}")
    known = set(TORCH_COMMON) | set(TORCH_PROFILES[profile])
    unknown = set(overrides or {}) - known
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)} for --backend torch; known: {sorted(known)}")
    vals = {**TORCH_COMMON, **TORCH_PROFILES[profile], **(overrides or {})}
    checks = [
        (vals["output_vocab"] in ("text", "audio"), "output_vocab must be text|audio"),
        (vals["repetition_guard"] in ("true", "false"), "repetition_guard must be true|false"),
        (vals["alibi_bias"] in ("sqrt", "linear"), "alibi_bias must be sqrt|linear"),
        (vals["slots"].isdigit() and int(vals["slots"]) >= 1, "slots must be an integer >= 1"),
        (vals["threads"].isdigit(), "threads must be an integer >= 0"),
        (float(vals["probe_tolerance"]) > 0, "probe_tolerance must be > 0"),
    ]
    bad = [msg for ok, msg in checks if not ok]
    if bad:
        raise ValueError("; ".join(bad))
    return vals


def make_torch_model(profile: str, repository: Path | str, overrides: dict[str, str] | None = None) -> Path:
    """Write the torch Step1 model ``<repository>/<prefix>/`` (chat and tts can share one repository). Returns
    the model folder."""
    vals = torch_values_for(profile, overrides)
    model = Path(repository) / vals["prefix"]
    if model.exists():
        shutil.rmtree(model)
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(render(TEMPLATES / "step1_torch" / "config.pbtxt.tmpl", vals))
    shutil.copy2(TEMPLATES / "step1_torch" / "1" / "model.py", model / "1" / "model.py")
    return model


def values_for(profile: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: use one of {sorted(PROFILES)}")
    vals = {**COMMON, **PROFILES[profile], **(overrides or {})}
    unknown = set(overrides or {}) - set(COMMON) - set(PROFILES[profile])
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}; known: {sorted(set(COMMON) | set(PROFILES[profile]))}")
    if not vals["gpu_device_ids"]:
        vals["gpu_device_ids"] = ",".join(str(i) for i in range(int(vals["tp_size"])))
    checks = [
        (int(vals["tp_size"]) >= 1, "tp_size must be >= 1"),
        (int(vals["max_batch_size"]) >= 1, "max_batch_size must be >= 1"),
        (0 < float(vals["kv_cache_free_gpu_mem_fraction"]) <= 1, "kv_cache_free_gpu_mem_fraction must be in (0, 1]"),
        (vals["enable_kv_cache_reuse"] in ("true", "false"), "enable_kv_cache_reuse must be true|false"),
        (vals["enable_chunked_context"] in ("true", "false"), "enable_chunked_context must be true|false"),
        (int(vals["max_queue_delay_microseconds"]) >= 0, "max_queue_delay_microseconds must be >= 0"),
        (vals["batch_scheduler_policy"] in ("guaranteed_no_evict", "max_utilization"), "bad batch_scheduler_policy"),
        (vals["batching_strategy"] in ("inflight_fused_batching", "v1"), "bad batching_strategy"),
        (len(vals["gpu_device_ids"].split(",")) == int(vals["tp_size"]), "gpu_device_ids must list tp_size GPUs"),
    ]
    bad = [msg for ok, msg in checks if not ok]
    if bad:
        raise ValueError("; ".join(bad))
    return vals


def render(template: Path, vals: dict[str, str]) -> str:
    return Template(template.read_text()).substitute(vals)


def make_repo(profile: str, output: Path | str = DEFAULT_OUT, overrides: dict[str, str] | None = None) -> Path:
    """Write models/triton/<prefix>/ (replacing a previous generation). Returns the repository folder."""
    vals = values_for(profile, overrides)
    repo = Path(output) / vals["prefix"]
    if repo.exists():
        shutil.rmtree(repo)
    for folder, suffix in MODELS.items():
        name = vals["prefix"] + suffix
        dest = repo / name / "1"
        dest.mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(render(TEMPLATES / folder / "config.pbtxt.tmpl", vals))
        if folder in PYTHON_MODELS:
            shutil.copy2(TEMPLATES / folder / "1" / "model.py", dest / "model.py")
            shutil.copy2(TEMPLATES / "common" / "step1_text.py", dest / "step1_text.py")
        else:
            (dest / ".gitkeep").write_text("")
    (repo / "README.md").write_text(
        f"# {vals['prefix']} (generated)\n\n"
        f"Generated by `python -m models.trtllm.make_repo --profile {profile}` with:\n\n"
        + "".join(f"- `{k}` = `{v}`\n" for k, v in sorted(vals.items()))
        + "\nServe: `tritonserver --model-repository=models/triton/"
        + vals["prefix"]
        + "` (GPU + TensorRT-LLM backend); see docs/TRITON.md.\n"
    )
    return repo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), action="append", help="chat and/or tts (default both)")
    ap.add_argument("--backend", choices=BACKENDS, default="trtllm", help="trtllm (GPU engine) or torch (torch Step1)")
    ap.add_argument("--output", default=str(DEFAULT_OUT), help="folder that receives <prefix>/ (default models/triton)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    for flag in (
        "tp_size",
        "max_batch_size",
        "kv_cache_free_gpu_mem_fraction",
        "enable_kv_cache_reuse",
        "enable_chunked_context",
        "max_queue_delay_microseconds",
        "engine_dir",
        "tokenizer_dir",
    ):
        ap.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None)
    a = ap.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in a.set)
    for flag in (
        "tp_size",
        "max_batch_size",
        "kv_cache_free_gpu_mem_fraction",
        "enable_kv_cache_reuse",
        "enable_chunked_context",
        "max_queue_delay_microseconds",
        "engine_dir",
        "tokenizer_dir",
    ):
        if getattr(a, flag) is not None:
            overrides[flag] = getattr(a, flag)
    for profile in a.profile or ["chat", "tts"]:
        if a.backend == "torch":
            print(make_torch_model(profile, a.output, overrides))
        else:
            print(make_repo(profile, a.output, overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
