"""stepaudio ops status/drain against a REAL kube-apiserver (v1.33, built from the Go module proxy by
scripts/install-tools.sh) with etcd 3.4 (apt). The chart is installed into it with the real helm binary.

What is real: API server (validation, RBAC with the chart's ops Role, service proxy), helm, the kubernetes client.
What is not: no scheduler, controller-manager or kubelet run, so the test creates the Pods of each Deployment and
writes their status itself, and "Triton" behind the service proxy is a small HTTP server answering
/v2/models/<m>/ready (200 ready / 400 not) on this machine's non-loopback address (the API server refuses to proxy
to loopback). Skips with the reason when kube-apiserver or etcd is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stepaudio import ops
from tests.deploy import apiserver
from tests.deploy.conftest import CHART, PROFILES, helm_path

NS = "voice"
REL = "sa"
READY_MODELS = {f"step_audio_{m}{part}" for m in ("chat", "tts")
                for part in ("", "_ensemble", "_preprocessing", "_trtllm", "_postprocessing")}


def _host_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outbound interface
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


class _Triton(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        parts = self.path.strip("/").split("/")
        ok = len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "ready" and parts[2] in READY_MODELS
        self.send_response(200 if ok else 400)
        self.end_headers()
        if not ok:
            self.wfile.write(b'{"error":"model not ready"}')

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture(scope="module")
def kapi() -> Iterator[apiserver.ApiServer]:
    api, etcd = apiserver.binaries()
    if not api or not etcd:
        pytest.skip(f"needs kube-apiserver (scripts/install-tools.sh builds .cache/bin/kube-apiserver) and etcd "
                    f"(apt-get install etcd-server); found kube-apiserver={api} etcd={etcd}")
    if helm_path() is None:
        pytest.skip("helm not found: set HELM or run scripts/install-tools.sh")
    srv = apiserver.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def release(kapi: apiserver.ApiServer) -> Iterator[dict[str, Any]]:
    from kubernetes import client, config

    env = dict(os.environ, KUBECONFIG=str(kapi.kubeconfig()))
    subjects = json.dumps([{"kind": "Group", "name": "stepaudio-oncall", "apiGroup": "rbac.authorization.k8s.io"}])
    proc = subprocess.run(
        [str(helm_path()), "install", REL, str(CHART), "-n", NS, "--create-namespace", *PROFILES["stepaudio"],
         "--set", "metrics.serviceMonitor.enabled=false", "--set", "metrics.prometheusRule.enabled=false",
         "--set", "kafka.strimzi.enabled=false", "--set", "rbac.ops.create=true", "--set", "vocoder.enabled=true",
         "--set-json", f"rbac.ops.subjects={subjects}"],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    admin = config.new_client_from_config(config_file=str(kapi.kubeconfig()))
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)

    # Play scheduler + kubelet + controllers: one Running/Ready pod per Deployment replica, status on the Deployment.
    ip = _host_ip()
    for d in apps.list_namespaced_deployment(NS).items:
        want = d.spec.replicas if d.spec.replicas is not None else 1
        for i in range(want):
            pod = client.V1Pod(
                metadata=client.V1ObjectMeta(name=f"{d.metadata.name}-{i}", labels=d.spec.template.metadata.labels),
                spec=d.spec.template.spec)
            pod.spec.node_name = f"node-{i}"
            core.create_namespaced_pod(NS, pod)
            pod_ip = ip if (ip and d.metadata.name.endswith("-triton")) else f"10.0.0.{i + 2}"
            core.patch_namespaced_pod_status(f"{d.metadata.name}-{i}", NS, {"status": {
                "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": c.name, "image": c.image, "imageID": "", "ready": True,
                                       "restartCount": 1 if "gateway" in d.metadata.name else 0,
                                       "state": {"running": {}}} for c in pod.spec.containers]}})
        apps.patch_namespaced_deployment_status(d.metadata.name, NS, {"status": {
            "observedGeneration": d.metadata.generation, "replicas": want, "readyReplicas": want,
            "availableReplicas": want, "updatedReplicas": want}})

    httpd = None
    if ip:
        httpd = ThreadingHTTPServer((ip, 0), _Triton)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        core.create_namespaced_endpoints(NS, client.V1Endpoints(
            metadata=client.V1ObjectMeta(name=f"{REL}-stepaudio-triton"),
            # the API server only proxies to addresses whose targetRef is a Pod with that IP
            subsets=[client.V1EndpointSubset(
                addresses=[client.V1EndpointAddress(ip=ip, target_ref=client.V1ObjectReference(
                    kind="Pod", name=f"{REL}-stepaudio-triton-0", namespace=NS))],
                ports=[client.CoreV1EndpointPort(name="http", port=httpd.server_port)])]))
    try:
        yield {"helm": proc, "core": core, "apps": apps, "ip": ip,
               "oncall": str(kapi.kubeconfig(apiserver.ONCALL_TOKEN, "oncall"))}
    finally:
        if httpd:
            httpd.shutdown()


def _ops(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="stepaudio")
    ops.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ops", *argv])
    rc = args.func(args)
    return rc, capsys.readouterr().out


def test_helm_install_into_real_apiserver(release: dict[str, Any]) -> None:
    out = release["helm"].stdout
    assert "STATUS: deployed" in out and "sa-stepaudio-gateway.voice.svc:50051" in out  # NOTES.txt rendered
    names = {d.metadata.name for d in release["apps"].list_namespaced_deployment(NS).items}
    assert {f"sa-stepaudio-{c}" for c in ("gateway", "vad", "tokenizer", "llm", "tools", "tts", "vocoder",
                                         "rlhf", "triton", "otel-collector")} == names


def test_status_as_oncall_user(release: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    if not release["ip"]:
        pytest.skip("no non-loopback IPv4 address: the API server will not proxy to loopback")
    rc, out = _ops(["status", "-n", NS, "--release", REL, "--kubeconfig", release["oncall"], "--json"], capsys)
    rows = {r["component"]: r for r in json.loads(out)}
    assert rc == 0, out
    assert len(rows["triton"]["models"]) == 10 and all(rows["triton"]["models"].values())
    assert rows["triton"]["pods"][0]["gpus"] == {"nvidia.com/gpu": 4}
    assert rows["vocoder"]["pods"][0]["gpus"] == {"nvidia.com/gpu": 1}
    assert rows["gateway"]["ready"] == rows["gateway"]["desired"] == 1  # HPA-managed: replicas left unset
    assert rows["gateway"]["pods"][0]["restarts"] == 1 and rows["gateway"]["pods"][0]["ready"] is True
    assert rows["vad"]["pods"][0]["gpus"] == {}
    rc, table = _ops(["status", "-n", NS, "--release", REL, "--kubeconfig", release["oncall"]], capsys)
    assert "step_audio_chat=ready" in table and "gpu=4" in table


def test_status_reports_a_model_that_is_not_ready(release: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    if not release["ip"]:
        pytest.skip("no non-loopback IPv4 address")
    READY_MODELS.discard("step_audio_tts")
    try:
        rc, out = _ops(["status", "-n", NS, "--release", REL, "--kubeconfig", release["oncall"], "--json"], capsys)
    finally:
        READY_MODELS.add("step_audio_tts")
    tr = next(r for r in json.loads(out) if r["component"] == "triton")
    assert rc == 1 and tr["models"]["step_audio_tts"] is False and "400" in tr["model_errors"]["step_audio_tts"]


def test_drain_dry_run_changes_nothing(release: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    before = release["apps"].read_namespaced_deployment("sa-stepaudio-gateway", NS).metadata.generation
    rc, out = _ops(["drain", "-n", NS, "--release", REL, "--kubeconfig", release["oncall"], "--dry-run"], capsys)
    assert rc == 0 and ops.RESTARTED_AT in out
    assert release["apps"].read_namespaced_deployment("sa-stepaudio-gateway", NS).metadata.generation == before


def test_drain_rolling_restart_and_wait(release: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    apps = release["apps"]

    def controller() -> None:  # the Deployment controller's part: report the new generation rolled out
        for _ in range(100):
            d = apps.read_namespaced_deployment("sa-stepaudio-gateway", NS)
            if ops.RESTARTED_AT in (d.spec.template.metadata.annotations or {}):
                apps.patch_namespaced_deployment_status(d.metadata.name, NS, {"status": {
                    "observedGeneration": d.metadata.generation, "replicas": 1, "updatedReplicas": 1,
                    "availableReplicas": 1, "readyReplicas": 1}})
                return
            time.sleep(0.1)

    t = threading.Thread(target=controller)
    t.start()
    rc, out = _ops(["drain", "-n", NS, "--release", REL, "--kubeconfig", release["oncall"], "--reason", "test",
                    "--wait", "--timeout", "20", "--poll-interval", "0.2"], capsys)
    t.join()
    assert rc == 0 and "rollout complete" in out
    d = apps.read_namespaced_deployment("sa-stepaudio-gateway", NS)
    assert d.metadata.annotations[ops.DRAIN_REASON] == "test" and ops.DRAIN_AT in d.metadata.annotations
    assert ops.RESTARTED_AT in d.spec.template.metadata.annotations


def test_drain_wait_times_out(release: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _ = _ops(["drain", "-n", NS, "--release", REL, "--kubeconfig", release["oncall"], "--component", "vad",
                  "--wait", "--timeout", "1", "--poll-interval", "0.2"], capsys)
    assert rc == 1  # nothing reconciles the new generation here


def test_drain_scale_to(release: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _ = _ops(["drain", "-n", NS, "--release", REL, "--kubeconfig", release["oncall"], "--component", "tools",
                  "--scale-to", "0"], capsys)
    assert rc == 0
    assert release["apps"].read_namespaced_deployment("sa-stepaudio-tools", NS).spec.replicas == 0


def test_drain_unknown_component(release: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _ = _ops(["drain", "-n", NS, "--release", REL, "--kubeconfig", release["oncall"], "--component", "nope"],
                 capsys)
    assert rc == 2


def test_ops_role_is_least_privilege(release: dict[str, Any]) -> None:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    oncall = config.new_client_from_config(config_file=release["oncall"])
    core, apps = client.CoreV1Api(oncall), client.AppsV1Api(oncall)
    for call in (lambda: core.delete_namespaced_pod("sa-stepaudio-vad-0", NS),
                 lambda: core.list_namespaced_secret(NS),
                 lambda: apps.delete_namespaced_deployment("sa-stepaudio-vad", NS),
                 lambda: core.connect_get_namespaced_service_proxy_with_path("sa-stepaudio-gateway:grpc", NS, "x"),
                 lambda: core.list_namespaced_pod("default")):
        with pytest.raises(ApiException) as e:
            call()
        assert e.value.status == 403
