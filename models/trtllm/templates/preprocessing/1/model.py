"""Preprocessing: templated prompt -> Step1 token ids (+ stop/bad word lists) for the TensorRT-LLM model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step1_text import EOT_ID, encode, words_list  # noqa: E402


def _strings(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return None
    return [
        v.decode("utf-8") if isinstance(v, bytes) else str(v)
        for v in t.as_numpy().reshape(t.as_numpy().shape[0], -1)[0]
    ]


def _int(request, name, default):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return int(t.as_numpy().reshape(-1)[0]) if t is not None else default


class TritonPythonModel:
    def initialize(self, args):
        from transformers import AutoTokenizer

        config = json.loads(args["model_config"])
        tokenizer_dir = config["parameters"]["tokenizer_dir"]["string_value"]
        if not tokenizer_dir or not Path(tokenizer_dir).exists():
            raise pb_utils.TritonModelException(
                f"tokenizer_dir {tokenizer_dir!r} does not exist (make_repo.py --tokenizer-dir)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=True)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                query = _strings(request, "QUERY")[0]
                ids = np.array([encode(self.tokenizer, query)], dtype=np.int32)
                out_len = _int(request, "REQUEST_OUTPUT_LEN", 256)
                stop = words_list(self.tokenizer, _strings(request, "STOP_WORDS_DICT") or [])
                bad = words_list(self.tokenizer, _strings(request, "BAD_WORDS_DICT") or [])
                tensors = [
                    pb_utils.Tensor("INPUT_ID", ids),
                    pb_utils.Tensor("REQUEST_INPUT_LEN", np.array([[ids.shape[1]]], dtype=np.int32)),
                    pb_utils.Tensor("BAD_WORDS_IDS", bad[np.newaxis]),
                    pb_utils.Tensor("STOP_WORDS_IDS", stop[np.newaxis]),
                    pb_utils.Tensor("REQUEST_OUTPUT_LEN", np.array([[out_len]], dtype=np.int32)),
                    pb_utils.Tensor("OUT_END_ID", np.array([[_int(request, "END_ID", EOT_ID)]], dtype=np.int32)),
                    pb_utils.Tensor("OUT_PAD_ID", np.array([[_int(request, "PAD_ID", EOT_ID)]], dtype=np.int32)),
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as e:  # noqa: BLE001
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"preprocessing: {e}")))
        return responses
