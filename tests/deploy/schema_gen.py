"""Generate charts/stepaudio/values.schema.json from values.yaml and its ``## @param`` comments.

Run ``python tests/deploy/schema_gen.py`` after editing values.yaml; test_schema.py fails while the committed
schema differs from the generated one. Rules: every value needs a ``## @param <path> <description>`` line;
a documented object whose children are not documented is free-form (Kubernetes types: resources, affinity...);
objects with documented children reject unknown keys (additionalProperties: false). OVERRIDES add enums/ranges.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "stepaudio"
PARAM = re.compile(r"^\s*## @param (\S+)\s*(.*)$")
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
COMPONENTS = ("gateway", "vad", "tokenizer", "llm", "tools", "tts", "vocoder", "rlhf", "triton")
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T)?$"}

OVERRIDES: dict[str, dict[str, Any]] = {
    "profile": {"enum": ["embedded", "stepaudio"]},
    "image.pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "image.digest": {"pattern": r"^(sha256:[a-f0-9]{64})?$"},
    "metrics.port": PORT,
    "triton.ports.grpc": PORT,
    "triton.ports.http": PORT,
    "triton.ports.metrics": PORT,
    "triton.tensorParallelSize": {"enum": [1, 2, 4, 8]},
    "triton.models": {"minItems": 1, "items": {"type": "string", "pattern": r"^[a-zA-Z0-9_.-]+$"}},
    "triton.modelRepository.source": {"enum": ["image", "pvc", "objectStore"]},
    "triton.shmSize": QUANTITY,
    "gpu.shmSize": QUANTITY,
    "gpu.resourceName": {"pattern": r"^nvidia\.com/(gpu|mig-[0-9]+g\.[0-9]+gb)$"},
    "modelStore.size": QUANTITY,
    "modelStore.mountPath": {"pattern": "^/"},
    "kafka.sasl.mechanism": {"enum": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]},
    "topologySpread.hostnameWhenUnsatisfiable": {"enum": ["DoNotSchedule", "ScheduleAnyway"]},
    "redis.url": {"pattern": r"^(rediss?://.*)?$"},
    "gateway.drain.graceSeconds": {"minimum": 1, "maximum": 3600},
    "gateway.drain.preStopSleepSeconds": {"minimum": 0, "maximum": 120},
    "gateway.maxSessions": {"minimum": 1},
    "tests.timeoutSeconds": {"minimum": 10},
}
for c in COMPONENTS:
    OVERRIDES[f"{c}.port"] = PORT
    OVERRIDES[f"{c}.replicaCount"] = {"minimum": 0}
    OVERRIDES[f"{c}.autoscaling.minReplicas"] = {"minimum": 1}
    OVERRIDES[f"{c}.autoscaling.maxReplicas"] = {"minimum": 1}
    OVERRIDES[f"{c}.autoscaling.targetCPUUtilizationPercentage"] = {"minimum": 0, "maximum": 100}
    OVERRIDES[f"{c}.autoscaling.customMetrics"] = {
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "averageValue"],
            "properties": {"name": {"type": "string", "minLength": 1}, "averageValue": {"type": "string"}},
        }
    }
    OVERRIDES[f"{c}.gpu.count"] = {"minimum": 0, "maximum": 8}
    OVERRIDES[f"{c}.gpu.resourceName"] = {"pattern": r"^(nvidia\.com/(gpu|mig-[0-9]+g\.[0-9]+gb))?$"}
    OVERRIDES[f"{c}.startupProbe.periodSeconds"] = {"minimum": 1}
    OVERRIDES[f"{c}.startupProbe.failureThreshold"] = {"minimum": 1}
    OVERRIDES[f"{c}.service.type"] = {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}
    OVERRIDES[f"{c}.pdb.minAvailable"] = {"type": ["string", "integer"]}
    OVERRIDES[f"{c}.pdb.maxUnavailable"] = {"type": ["string", "integer"]}
    OVERRIDES[f"{c}.terminationGracePeriodSeconds"] = {"minimum": 0}


def params(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = PARAM.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def node(path: str, value: Any, docs: dict[str, str], missing: list[str]) -> dict[str, Any]:
    children = [k for k in docs if k.startswith(path + ".")] if path else list(docs)
    s: dict[str, Any] = {}
    if path:
        if path in docs:
            s["description"] = docs[path]
        elif not (isinstance(value, dict) and children):
            missing.append(path)
    if isinstance(value, dict) and (children or not path):
        s["type"] = "object"
        s["additionalProperties"] = False
        s["properties"] = {
            k: node(f"{path}.{k}" if path else k, v, docs, missing) for k, v in value.items()
        }
    else:
        s["type"] = _type(value)
        if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
            s["items"] = {"type": "string"}
    s.update(OVERRIDES.get(path, {}))
    return s


def generate() -> tuple[dict[str, Any], list[str]]:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    docs = params(text)
    missing: list[str] = []
    schema = {"$schema": "https://json-schema.org/draft-07/schema#", "title": "stepaudio chart values"}
    schema.update(node("", values, docs, missing))
    return schema, missing


def render() -> str:
    schema, _ = generate()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    schema, missing = generate()
    if missing:
        sys.exit("values without a ## @param line: " + ", ".join(missing))
    (CHART / "values.schema.json").write_text(render())
    print("wrote", CHART / "values.schema.json")
