"""``stepaudio ops``: operate a Step-Audio Helm release with the official ``kubernetes`` Python client.

``stepaudio ops status``
    For every component of the release (pods labelled ``app.kubernetes.io/instance=<release>`` and
    ``app.kubernetes.io/name=stepaudio``, grouped by ``app.kubernetes.io/component``): the Deployment's desired /
    ready / updated replicas, and per pod its phase, Ready condition, restarts, node and the GPUs it was allocated
    (container limits named ``nvidia.com/gpu`` or ``nvidia.com/mig-*``). For Triton it asks the Triton HTTP API
    ``GET /v2/models/<model>/ready`` for every ``--load-model`` of the Triton Deployment, through the API server's
    service proxy (``/api/v1/namespaces/<ns>/services/<triton-svc>:<http>/proxy/v2/models/<m>/ready``), so it
    works from a laptop with only kubeconfig access (RBAC: ``services/proxy`` get; the chart's ``rbac.ops``).
    Exit status 0 when every Deployment has all replicas ready and every Triton model is ready, else 1.

``stepaudio ops drain [--component gateway] [--scale-to N] [--wait] [--dry-run]``
    Drains a component the way a rollout does, and only through the Kubernetes API:
    1. annotates the Deployment with ``stepaudio.ai/drain-requested-at`` (UTC time) and
       ``stepaudio.ai/drain-reason`` (``--reason``), so the request is visible in ``kubectl describe``;
    2. without ``--scale-to``: sets the pod-template annotation ``kubectl.kubernetes.io/restartedAt`` (exactly
       what ``kubectl rollout restart`` does). The Deployment (maxUnavailable 0, maxSurge 1) starts a new pod,
       waits for it to be Ready, then deletes one old pod; the kubelet runs the gateway's preStop sleep and then
       sends SIGTERM, on which the gateway reports NOT_SERVING, takes no new sessions and lets live sessions
       finish for ``STEPAUDIO_GATEWAY_DRAIN_GRACE_S`` within ``terminationGracePeriodSeconds``;
    3. with ``--scale-to N``: patches ``deployments/scale`` to N replicas instead; the removed pods get the same
       preStop + SIGTERM drain (use N=0 before maintenance, then scale back or ``helm upgrade``);
    4. with ``--wait``: polls until the rollout is complete (observedGeneration caught up, updated == available ==
       desired replicas) or ``--timeout`` passes (exit status 1).
    It never deletes pods or sends signals itself. ``--dry-run`` prints the patches and changes nothing.

The lead's ``stepaudio/cli.py`` calls :func:`register` with its argparse sub-parsers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

PART_OF = "stepaudio"
DRAIN_AT = "stepaudio.ai/drain-requested-at"
DRAIN_REASON = "stepaudio.ai/drain-reason"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@dataclass
class PodStatus:
    name: str
    phase: str
    ready: bool
    restarts: int
    node: str
    gpus: dict[str, int] = field(default_factory=dict)


@dataclass
class ComponentStatus:
    component: str
    deployment: str = ""
    desired: int = 0
    ready: int = 0
    updated: int = 0
    pods: list[PodStatus] = field(default_factory=list)
    models: dict[str, bool] = field(default_factory=dict)
    model_errors: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.ready >= self.desired and all(self.models.values())


def _selector(release: str, name: str, component: str | None = None) -> str:
    sel = f"app.kubernetes.io/instance={release},app.kubernetes.io/name={name}"
    return sel + (f",app.kubernetes.io/component={component}" if component else "")


def _clients(args: argparse.Namespace) -> tuple[Any, Any]:
    """CoreV1Api and AppsV1Api from kubeconfig (or in-cluster config); ``args.api_client`` wins (tests)."""
    from kubernetes import client, config

    api_client = getattr(args, "api_client", None)
    if api_client is None:
        try:
            config.load_kube_config(config_file=args.kubeconfig, context=args.context)
        except config.ConfigException:
            config.load_incluster_config()
        api_client = client.ApiClient()
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client)


def _gpus(pod: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in pod.spec.containers or []:
        limits = (c.resources.limits if c.resources else None) or {}
        for k, v in limits.items():
            if k.startswith("nvidia.com/"):
                out[k] = out.get(k, 0) + int(v)
    return out


def _pod_status(pod: Any) -> PodStatus:
    conds = (pod.status.conditions if pod.status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conds)
    restarts = sum(cs.restart_count or 0 for cs in (pod.status.container_statuses or []))
    return PodStatus(
        name=pod.metadata.name,
        phase=pod.status.phase or "Unknown",
        ready=ready,
        restarts=restarts,
        node=pod.spec.node_name or "",
        gpus=_gpus(pod),
    )


def _triton_models(deploy: Any) -> list[str]:
    models: list[str] = []
    for c in deploy.spec.template.spec.containers or []:
        for a in list(c.args or []) + list(c.command or []):
            if a.startswith("--load-model="):
                models.append(a.split("=", 1)[1])
    return models


def _model_ready(core: Any, namespace: str, service: str, port: str, model: str) -> tuple[bool, str]:
    """GET /v2/models/<model>/ready through the API server service proxy (Triton: 200 ready, 400 not ready)."""
    from kubernetes.client.rest import ApiException

    try:
        core.connect_get_namespaced_service_proxy_with_path(
            name=f"{service}:{port}", namespace=namespace, path=f"v2/models/{model}/ready", _request_timeout=10
        )
        return True, ""
    except ApiException as e:
        return False, f"HTTP {e.status}: {(e.body or e.reason or '')!s}"[:200]


def collect_status(core: Any, apps: Any, namespace: str, release: str, name: str = PART_OF) -> list[ComponentStatus]:
    comps: dict[str, ComponentStatus] = {}
    for d in apps.list_namespaced_deployment(namespace, label_selector=_selector(release, name)).items:
        comp = (d.metadata.labels or {}).get("app.kubernetes.io/component", d.metadata.name)
        st = d.status
        comps[comp] = ComponentStatus(
            component=comp,
            deployment=d.metadata.name,
            desired=d.spec.replicas if d.spec.replicas is not None else 1,
            ready=(st.ready_replicas or 0) if st else 0,
            updated=(st.updated_replicas or 0) if st else 0,
        )
        if comp == "triton":
            svcs = core.list_namespaced_service(namespace, label_selector=_selector(release, name, "triton")).items
            svc = svcs[0] if svcs else None
            port = next((p.name for p in (svc.spec.ports or []) if p.name == "http"), None) if svc else None
            for m in _triton_models(d):
                if svc is None or port is None:
                    comps[comp].models[m] = False
                    comps[comp].model_errors[m] = "no Triton Service with an 'http' port in the release"
                    continue
                ok, err = _model_ready(core, namespace, svc.metadata.name, port, m)
                comps[comp].models[m] = ok
                if err:
                    comps[comp].model_errors[m] = err
    for p in core.list_namespaced_pod(namespace, label_selector=_selector(release, name)).items:
        comp = (p.metadata.labels or {}).get("app.kubernetes.io/component", "")
        if comp in comps:
            comps[comp].pods.append(_pod_status(p))
    return [comps[k] for k in sorted(comps)]


def _print_status(rows: list[ComponentStatus]) -> None:
    print(f"{'COMPONENT':<16}{'READY':<8}{'UPDATED':<9}{'GPUS':<24}MODELS")
    for r in rows:
        gpus: dict[str, int] = {}
        for p in r.pods:
            for k, v in p.gpus.items():
                gpus[k] = gpus.get(k, 0) + v
        g = ",".join(f"{k.removeprefix('nvidia.com/')}={v}" for k, v in sorted(gpus.items())) or "-"
        models = " ".join(f"{m}={'ready' if ok else 'NOT-READY'}" for m, ok in r.models.items()) or "-"
        print(f"{r.component:<16}{f'{r.ready}/{r.desired}':<8}{r.updated:<9}{g:<24}{models}")
        for p in r.pods:
            pg = ",".join(f"{k.removeprefix('nvidia.com/')}={v}" for k, v in p.gpus.items()) or "-"
            print(f"  {p.name:<46}{p.phase:<10}{'ready' if p.ready else 'not-ready':<10}"
                  f"restarts={p.restarts:<4}node={p.node or '-'} gpus={pg}")
        for m, e in r.model_errors.items():
            print(f"  triton model {m}: {e}")


def cmd_status(args: argparse.Namespace) -> int:
    core, apps = _clients(args)
    rows = collect_status(core, apps, args.namespace, args.release, args.name)
    if args.json:
        print(json.dumps([asdict(r) | {"healthy": r.healthy} for r in rows], indent=2))
    else:
        if not rows:
            print(f"no Deployments with {_selector(args.release, args.name)} in namespace {args.namespace}")
        _print_status(rows)
    return 0 if rows and all(r.healthy for r in rows) else 1


def drain_patches(now: str, reason: str, scale_to: int | None) -> dict[str, Any]:
    """The exact changes ``ops drain`` makes (also printed by --dry-run)."""
    out: dict[str, Any] = {"deployment": {"metadata": {"annotations": {DRAIN_AT: now, DRAIN_REASON: reason}}}}
    if scale_to is None:
        out["deployment"]["spec"] = {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}
    else:
        out["scale"] = {"spec": {"replicas": scale_to}}
    return out


def _rollout_done(d: Any) -> bool:
    st = d.status
    want = d.spec.replicas if d.spec.replicas is not None else 1
    if st is None or (st.observed_generation or 0) < (d.metadata.generation or 0):
        return False
    return (st.updated_replicas or 0) == want and (st.available_replicas or 0) == want and (st.replicas or 0) == want


def cmd_drain(args: argparse.Namespace) -> int:
    core, apps = _clients(args)
    del core
    deps = apps.list_namespaced_deployment(
        args.namespace, label_selector=_selector(args.release, args.name, args.component)
    ).items
    if not deps:
        print(f"no Deployment for component {args.component!r} of release {args.release!r} in {args.namespace}",
              file=sys.stderr)
        return 2
    d = deps[0]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patches = drain_patches(now, args.reason, args.scale_to)
    if args.dry_run:
        print(json.dumps({"deployment": d.metadata.name, "namespace": args.namespace, "patches": patches}, indent=2))
        return 0
    apps.patch_namespaced_deployment(d.metadata.name, args.namespace, patches["deployment"])
    if "scale" in patches:
        apps.patch_namespaced_deployment_scale(d.metadata.name, args.namespace, patches["scale"])
        print(f"{d.metadata.name}: scaled to {args.scale_to}; removed pods drain (preStop + SIGTERM)")
    else:
        print(f"{d.metadata.name}: rolling restart requested at {now}; old pods drain (preStop + SIGTERM)")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        cur = apps.read_namespaced_deployment(d.metadata.name, args.namespace)
        if _rollout_done(cur):
            print(f"{d.metadata.name}: rollout complete")
            return 0
        time.sleep(args.poll_interval)
    print(f"{d.metadata.name}: rollout not complete after {args.timeout:.0f}s", file=sys.stderr)
    return 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="default", help="namespace of the release")
    p.add_argument("--release", default="stepaudio", help="Helm release name (app.kubernetes.io/instance)")
    p.add_argument("--name", default=PART_OF, help="chart name label (app.kubernetes.io/name)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", default=None, help="kubeconfig context")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ops status`` and ``ops drain`` to an argparse sub-parser set; each sets ``func(args) -> int``."""
    ops = subparsers.add_parser("ops", help="operate a Kubernetes release (status, drain)")
    sub = ops.add_subparsers(dest="ops_command", required=True)

    st = sub.add_parser("status", help="pods, readiness, GPU allocation and Triton model readiness per component")
    _common(st)
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.set_defaults(func=cmd_status)

    dr = sub.add_parser("drain", help="drain a component through a rolling restart or a scale-down")
    _common(dr)
    dr.add_argument("--component", default="gateway", help="component to drain (default: gateway)")
    dr.add_argument("--scale-to", type=int, default=None, help="scale to N replicas instead of a rolling restart")
    dr.add_argument("--reason", default="ops drain", help="recorded in the stepaudio.ai/drain-reason annotation")
    dr.add_argument("--wait", action="store_true", help="wait until the rollout completes")
    dr.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    dr.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    dr.add_argument("--dry-run", action="store_true", help="print the patches, change nothing")
    dr.set_defaults(func=cmd_drain)
    return ops
