"""The files that put the chart on the local single-node cluster (make k8s-e2e) agree with each other and with
the chart: every image the release runs is one `scripts/images.sh` builds, everything fits on a 2-CPU node, and
the simulated GPU pool separates GPU pods from CPU pods. (The cluster run itself is `make k8s-e2e`; its table is
in docs/DEPLOY.md.)"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy.conftest import CHART, ROOT, render

LOCAL = ROOT / "infra" / "k8s"


def _cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, int, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"].get("replicas", 1), d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def _infra_docs() -> list[dict[str, Any]]:
    return [d for f in ("redis.yaml", "coredns.yaml") for d in yaml.safe_load_all((LOCAL / f).read_text()) if d]


def built_images() -> set[str]:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "images.sh"), "list"], capture_output=True, text=True,
                         check=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHON": _python()}).stdout
    return {line.split()[1] for line in out.splitlines()}


def _python() -> str:
    import sys

    return sys.executable


def local_release() -> list[dict[str, Any]]:
    return render("embedded", "-f", str(LOCAL / "values-local.yaml"))


def test_every_release_image_is_built_here_and_never_pulled() -> None:
    images = built_images()
    for name, _, spec in _pod_specs(local_release()):
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["image"] in images, f"{name}/{c['name']} runs {c['image']}, which scripts/images.sh does not build"
            assert c["imagePullPolicy"] == "Never", f"{name}/{c['name']} would try a registry"


def test_the_release_fits_on_a_two_cpu_node() -> None:
    total, memory = 0.0, 0
    for _, replicas, spec in _pod_specs(local_release()) + _pod_specs(_infra_docs()):
        for c in spec["containers"]:
            req = c["resources"]["requests"]
            total += replicas * _cpu(str(req["cpu"]))
            mem = str(req["memory"])
            memory += replicas * int(mem[:-2]) * (1024 if mem.endswith("Gi") else 1)
    # rolling the gateway adds one surge pod; the kubelet and control plane need the rest
    gateway = next(s for n, _, s in _pod_specs(local_release()) if n.endswith("-gateway"))
    total += _cpu(str(gateway["containers"][0]["resources"]["requests"]["cpu"]))
    assert total <= 1.0, f"{total:.2f} CPUs requested: pods would stay Pending on the 2-CPU node"
    assert memory <= 8 * 1024, f"{memory} MiB requested"


def test_one_gateway_so_a_rollout_has_one_old_and_one_new_pod() -> None:
    docs = local_release()
    gw = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway"))
    assert gw["spec"]["replicas"] == 1
    assert not any(d["kind"] == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["name"] ==
                   gw["metadata"]["name"] for d in docs)
    roll = gw["spec"]["strategy"]["rollingUpdate"]
    assert (roll["maxSurge"], roll["maxUnavailable"]) == (1, 0), "the new pod must be Ready before the old drains"
    assert "preStop" in gw["spec"]["template"]["spec"]["containers"][0]["lifecycle"]


def test_redis_is_where_the_embedded_profile_looks() -> None:
    url = yaml.safe_load((CHART / "values-embedded.yaml").read_text())["redis"]["url"]
    svc = next(d for d in yaml.safe_load_all((LOCAL / "redis.yaml").read_text()) if d and d["kind"] == "Service")
    assert url.startswith(f"redis://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/")


def test_simulated_gpu_pool_separates_gpu_and_cpu_pods() -> None:
    docs = render("stepaudio", "-f", str(LOCAL / "values-gpu-sim.yaml"))
    pv, pvc = list(yaml.safe_load_all((LOCAL / "modelstore-pv.yaml").read_text()))
    gpu, cpu = [], []
    for name, _, spec in _pod_specs(docs):
        limits = spec["containers"][0]["resources"].get("limits", {})
        tolerates = any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
        if "nvidia.com/gpu" in limits:
            gpu.append(name)
            assert spec["nodeSelector"] == {"stepaudio.ai/pool": "gpu"} and tolerates, name
            claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
            assert claims <= {pvc["metadata"]["name"]}, f"{name} mounts {claims}"
        else:
            cpu.append(name)
            assert not tolerates, f"{name} would be allowed onto the tainted GPU node"
    assert len(gpu) >= 3 and cpu, (gpu, cpu)
    assert pv["spec"]["claimRef"] == {"namespace": pvc["metadata"]["namespace"], "name": pvc["metadata"]["name"]}
    assert pvc["metadata"]["namespace"] == "stepaudio-gpu-sim"  # scripts/k8s/e2e.py GPU_NS
