"""GPU check of the Step-Audio serving path, one command (``make gpu-check``), under 10 minutes on one GPU.

It prints one table of figures:

1. Step1 (tiny, real layout) on the torch path in bf16 on the device vs the fp32 probe (``models.stepaudio.probe``):
   max logit difference in reference standard deviations, arg-max agreement, decode tokens/s.
2. The same with ``alibi_bias=linear`` (stock TensorRT-LLM's bias): must be refused by the probe.
3. TTS token2wav as the reference runs it on CUDA: flow in bf16, HiFT in fp32; real-time factor.
4. When ``tensorrt_llm`` is importable: convert the tiny checkpoint (``models.trtllm.convert_step1``), build an
   engine with ``trtllm-build``, run the probe prompt through it (context logits) and report the same difference:
   the figure that says whether the engine computes Step1's sqrt-ALiBi. Skipped with a note otherwise.

``--device cpu`` runs the same steps on CPU (fp32), so the script itself is checked where no GPU is lent.

    .venv/bin/python bench/gpu_check.py [--device cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.stepaudio import probe  # noqa: E402
from models.stepaudio.tiny import make_tiny_store  # noqa: E402


def step1_rows(store: Path, device: str) -> list[tuple[str, str]]:
    import torch

    from models.stepaudio.step1 import Step1ForCausalLM

    rows: list[tuple[str, str]] = []
    ckpt = store / "Step-Audio-Chat"
    ref = probe.Probe.load(ckpt / probe.PROBE_FILE)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = Step1ForCausalLM.from_pretrained(ckpt, device, dtype=dtype)

    def served(ids: list[int]) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.tensor([ids], device=device))[0][0].float().cpu().numpy()

    tol = 0.25 if dtype == torch.bfloat16 else probe.DEFAULT_TOLERANCE
    for bias in ("sqrt", "linear"):
        model.alibi_bias = bias
        r = probe.check(served, ref, tol)
        rows.append((f"Step1 probe, {bias} ALiBi ({dtype}, {device})",
                     f"max diff {r.max_diff:.4g} std, arg-max {'ok' if r.argmax_agree else 'DIFFERS'}, "
                     f"{'ACCEPTED' if r.ok else 'REFUSED'}"))
    model.alibi_bias = "sqrt"
    n = 64
    t0 = time.perf_counter()
    out = model.generate(ref.ids[:32], max_new_tokens=n, temperature=0.0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    rows.append(("Step1 tiny greedy decode", f"{len(out) / (time.perf_counter() - t0):.1f} tokens/s"))
    return rows


def token2wav_rows(store: Path, device: str) -> list[tuple[str, str]]:
    import torch

    from models.stepaudio.cosyvoice import load_flow_dir, load_hift_dir
    from models.stepaudio.token2wav import FlowPrompt, Token2Wav

    cosy = store / "Step-Audio-TTS-3B" / "CosyVoice-300M-25Hz"
    flow, hift = load_flow_dir(cosy, device), load_hift_dir(cosy, device)
    engine = Token2Wav(flow, hift, seed=0)
    dtypes = (next(flow.parameters()).dtype, next(hift.parameters()).dtype)
    rng = np.random.default_rng(0)
    tokens = [int(x) for x in rng.integers(0, 5120, 250)]  # 6 s of speech
    prompt = FlowPrompt(np.asarray(rng.integers(0, 5120, 50)), np.zeros((50 * 22050 // 256 // 42, 80), np.float32),
                        np.zeros(192, np.float32))
    t0 = time.perf_counter()
    mel = engine.offline_mel(tokens, prompt, max_tokens=len(tokens))
    wav = engine.vocode(mel)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return [("token2wav dtypes (flow, HiFT)", f"{dtypes[0]}, {dtypes[1]}"),
            ("token2wav 6 s of tokens", f"{dt * 1000:.0f} ms, real-time factor {dt / (len(wav) / 22050):.3f}")]


def trtllm_rows(store: Path, work: Path) -> list[tuple[str, str]]:
    if importlib.util.find_spec("tensorrt_llm") is None or shutil.which("trtllm-build") is None:
        return [("TensorRT-LLM engine probe", "skipped: tensorrt_llm / trtllm-build not installed here")]
    from models.trtllm.convert_step1 import convert

    ckpt = convert(store / "Step-Audio-Chat", work / "trt-ckpt", tp_size=1, dtype="bfloat16")
    engine = work / "engine"
    build = subprocess.run(["trtllm-build", "--checkpoint_dir", str(ckpt), "--output_dir", str(engine),
                            "--gather_context_logits", "--max_batch_size", "1", "--max_input_len", "256",
                            "--max_seq_len", "512"], capture_output=True, text=True, timeout=420)
    if build.returncode:
        return [("TensorRT-LLM engine build", f"FAILED: {build.stderr.strip().splitlines()[-1:]}")]
    import torch
    from tensorrt_llm.runtime import ModelRunner

    runner = ModelRunner.from_dir(str(engine))
    ref = probe.Probe.load(store / "Step-Audio-Chat" / probe.PROBE_FILE)

    def served(ids: list[int]) -> np.ndarray:
        out = runner.generate([torch.tensor(ids, dtype=torch.int32)], max_new_tokens=1, output_generation_logits=False,
                              return_dict=True, output_context_logits=True)
        return out["context_logits"][0].float().cpu().numpy()

    r = probe.check(served, ref, 0.25)
    return [("TensorRT-LLM engine probe (bf16)", f"max diff {r.max_diff:.4g} std, arg-max "
             f"{'ok' if r.argmax_agree else 'DIFFERS'}, {'ACCEPTED' if r.ok else 'REFUSED'}")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a dry run of the script)")
    ap.add_argument("--out", default="", help="keep the tiny store and engine here (default: a temp folder)")
    a = ap.parse_args(argv)
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for a dry run", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.out or tmp)
        store = make_tiny_store(work / "models")
        rows = [("device", torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu")]
        rows += step1_rows(store, a.device)
        rows += token2wav_rows(store, a.device)
        rows += trtllm_rows(store, work) if a.device.startswith("cuda") else [
            ("TensorRT-LLM engine probe", "skipped on cpu")]
    rows.append(("wall time", f"{time.perf_counter() - t0:.0f} s"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}} | {v}")
    refused = next(v for k, v in rows if "linear ALiBi" in k)
    return 0 if "REFUSED" in refused else 1


if __name__ == "__main__":
    sys.exit(main())
