"""infra/ agrees with the chart: node pool labels/taints, prometheus-adapter metrics, alert rules, dashboard."""

from __future__ import annotations

import json
import re

import yaml

from tests.deploy.conftest import CHART, ROOT, render

INFRA = ROOT / "infra"
STEPAUDIO_VALUES = yaml.safe_load((CHART / "values-stepaudio.yaml").read_text())


def test_karpenter_pools_match_chart_scheduling() -> None:
    pools = {d["metadata"]["name"]: d for d in yaml.safe_load_all((INFRA / "karpenter" / "nodepools.yaml").read_text())
             if d and d["kind"] == "NodePool"}
    gpu = pools["stepaudio-gpu"]["spec"]["template"]
    cpu = pools["stepaudio-cpu"]["spec"]["template"]
    assert STEPAUDIO_VALUES["gpu"]["nodeSelector"].items() <= gpu["metadata"]["labels"].items()
    assert STEPAUDIO_VALUES["cpuNodeSelector"].items() <= cpu["metadata"]["labels"].items()
    taints = gpu["spec"]["taints"]
    for t in taints:  # every GPU-pool taint is tolerated by the chart's GPU pods
        assert any(tol["key"] == t["key"] and tol["effect"] == t["effect"] and tol["operator"] == "Exists"
                   for tol in STEPAUDIO_VALUES["gpu"]["tolerations"]), t
    assert not cpu["spec"].get("taints")


def test_gke_pools_match_chart_scheduling() -> None:
    tf = (INFRA / "terraform" / "gke" / "main.tf").read_text()
    for k, v in STEPAUDIO_VALUES["gpu"]["nodeSelector"].items():
        assert f'"{k}" = "{v}"' in tf
    assert re.search(r'taint \{\s*key\s*=\s*"nvidia.com/gpu"', tf)
    assert 'effect = "NO_SCHEDULE"' in tf


def test_gpu_operator_runs_on_gpu_pool() -> None:
    v = yaml.safe_load((INFRA / "gpu-operator" / "values.yaml").read_text())
    assert v["daemonsets"]["nodeSelector"] == STEPAUDIO_VALUES["gpu"]["nodeSelector"]
    assert v["mig"]["strategy"] in ("single", "mixed")


def test_prometheus_adapter_serves_every_hpa_metric() -> None:
    rules = yaml.safe_load((INFRA / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"]
    served = {r["name"]["as"] for r in rules}
    wanted = set()
    for d in render("stepaudio"):
        if d["kind"] == "HorizontalPodAutoscaler":
            wanted |= {m["pods"]["metric"]["name"] for m in d["spec"]["metrics"] if m["type"] == "Pods"}
    assert wanted and wanted <= served, f"adapter lacks {wanted - served}"
    for r in rules:
        assert "<<.LabelMatchers>>" in r["metricsQuery"] and r["resources"]["overrides"]["pod"]["resource"] == "pod"


def test_prometheus_rule_matches_chart_copy() -> None:
    infra = yaml.safe_load((INFRA / "monitoring" / "prometheus-rules.yaml").read_text())
    chart = yaml.safe_load((CHART / "files" / "prometheus-rule-groups.yaml").read_text())
    assert infra["kind"] == "PrometheusRule" and infra["spec"] == chart


def test_dashboard_covers_voice_slo_metrics() -> None:
    dash = json.loads((INFRA / "grafana" / "stepaudio-voice-slo.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("stepaudio_turn_time_to_first_audio_seconds_bucket", "stepaudio_gateway_active_sessions",
                   "nv_inference_queue_duration_us", "nv_trt_llm_kv_cache_block_metrics", "stepaudio_rpc_errors_total"):
        assert metric in exprs, metric
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"]


def test_otel_pipeline_has_traces_and_prometheus() -> None:
    cfg = yaml.safe_load((INFRA / "otel" / "collector-config.yaml").read_text())
    pipes = cfg["service"]["pipelines"]
    assert "otlp" in pipes["traces"]["receivers"]
    assert any(e.startswith("otlp") for e in pipes["traces"]["exporters"])
    assert any("prometheus" in e for p in pipes.values() for e in p["exporters"])
    for p in pipes.values():
        for name in p["receivers"] + p["exporters"] + p.get("processors", []):
            section = {**cfg.get("receivers", {}), **cfg.get("exporters", {}), **cfg.get("processors", {}),
                       **cfg.get("connectors", {})}
            assert name in section, f"pipeline uses undefined {name}"
