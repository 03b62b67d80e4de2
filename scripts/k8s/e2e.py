"""The chart on a real cluster (scripts/k8s/cluster.sh up, images loaded by scripts/images.sh export): install the
embedded profile, `helm test`, a spoken turn from this host through the gateway Service, a rolling update of the
gateway that drains, a stage pod killed mid-turn, NetworkPolicy enforcement, and GPU-pool scheduling with a
simulated GPU node. Prints one table; exits non-zero when a check fails.

    make k8s-e2e                     # everything: tools, images, cluster, this script
    .venv/bin/python scripts/k8s/e2e.py [--keep] [--skip-gpu-sim]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stepaudio.client import Conversation, read_wav, session_config, stream_audio  # noqa: E402

BIN = Path(os.environ.get("BIN_DIR", ROOT / ".cache" / "bin"))
STATE = Path(os.environ.get("K8S_STATE", "/var/lib/stepaudio-k8s"))
KUBECONFIG = os.environ.get("KUBECONFIG") or str(STATE / "admin.kubeconfig")
CHART = ROOT / "charts" / "stepaudio"
NS, RELEASE = "stepaudio", "stepaudio"
GPU_NS = "stepaudio-gpu-sim"
QUESTION = ROOT / "tests" / "data" / "question.wav"
NODE = os.environ.get("K8S_NODE_NAME", "stepaudio-node")
CONTAINERD = os.environ.get("CONTAINERD_ADDRESS", "/run/stepaudio-k8s/containerd.sock")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[], str]) -> bool:
        t0 = time.monotonic()
        try:
            detail, ok = fn(), True
        except Exception as e:  # a failed check is reported, and the next one still runs
            detail, ok = f"{type(e).__name__}: {e}", False
        self.checks.append(Check(name, ok, detail, time.monotonic() - t0))
        print(f"[e2e] {'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        return ok

    def table(self) -> str:
        w = max(len(c.name) for c in self.checks)
        lines = [f"| {'check':<{w}} | result | time (s) | detail", f"|{'-' * (w + 2)}|--------|----------|-------"]
        for c in self.checks:
            lines.append(f"| {c.name:<{w}} | {'PASS' if c.ok else 'FAIL':<6} | {c.seconds:8.1f} | {c.detail}")
        return "\n".join(lines)


def sh(*args: str, timeout: float = 120, check: bool = True, input_: str | None = None) -> str:
    env = dict(os.environ, KUBECONFIG=KUBECONFIG)
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, input=input_)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])}... exited {p.returncode}: {(p.stderr or p.stdout)[-1500:]}")
    return p.stdout


def kubectl(*args: str, timeout: float = 120, check: bool = True, input_: str | None = None) -> str:
    return sh(str(BIN / "kubectl"), *args, timeout=timeout, check=check, input_=input_)


def helm(*args: str, timeout: float = 1500) -> str:
    return sh(str(BIN / "helm"), *args, timeout=timeout)


def kjson(*args: str, ns: str = NS) -> dict:
    return json.loads(kubectl("-n", ns, "get", *args, "-o", "json"))


def pods(selector: str, ns: str = NS) -> list[dict]:
    return [p for p in kjson("pods", "-l", selector, ns=ns)["items"]]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def wait(what: str, cond: Callable[[], object], timeout: float, every: float = 1.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        time.sleep(every)


def component(name: str) -> str:
    return f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={name}"


def gateway_addr() -> str:
    svc = kjson("service", f"{RELEASE}-gateway")
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
    return f"{svc['spec']['clusterIP']}:{port}"


# ---------------------------------------------------------------- conversations from this host


async def spoken_turn(addr: str, timeout: float = 180) -> dict:
    """One spoken question through ``addr``; the reply's transcript, text and audio length."""
    pcm, rate = read_wav(QUESTION)
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(rate))
        await stream_audio(conv, pcm, rate, realtime=False)
        result = await conv.finish(timeout)
    turn = result.last
    if result.errors or turn.outcome != "TURN_OUTCOME_COMPLETED" or not turn.audio:
        raise RuntimeError(f"turn {turn.outcome or 'missing'}, errors {[(e.code, e.message) for e in result.errors]}")
    return {"transcript": turn.transcript, "reply": turn.reply_text,
            "audio_s": len(turn.audio) / 2 / result.sample_rate_hz, "session": result.session_id}


def check_turn_through_service() -> str:
    addr = gateway_addr()
    t0 = time.monotonic()
    r = asyncio.run(spoken_turn(addr))
    return (f"{addr}: heard {r['transcript']!r}, replied {r['reply'][:60]!r}, {r['audio_s']:.1f} s of audio "
            f"in {time.monotonic() - t0:.1f} s")


async def _drain() -> str:
    addr = gateway_addr()
    pcm, rate = read_wav(QUESTION)
    old = [p["metadata"]["name"] for p in pods(component("gateway"))]
    if len(old) != 1:
        raise RuntimeError(f"expected one gateway pod, found {old}")
    async with grpc.aio.insecure_channel(addr) as live_ch:
        live = Conversation(live_ch, session_config(rate))
        await stream_audio(live, pcm, rate)
        await live.wait_turns(1, 180)
        kubectl("-n", NS, "rollout", "restart", f"deployment/{RELEASE}-gateway")

        def old_terminating() -> bool:
            ps = {p["metadata"]["name"]: p for p in pods(component("gateway"))}
            return old[0] in ps and bool(ps[old[0]]["metadata"].get("deletionTimestamp"))

        await asyncio.to_thread(wait, "the old gateway pod terminating", old_terminating, 300)
        t_sigterm = time.monotonic()
        new = [p for p in pods(component("gateway")) if p["metadata"]["name"] != old[0] and ready(p)]
        new_ip = new[0]["status"]["podIP"]

        def endpoints_new_only() -> bool:
            eps = kjson("endpointslices", "-l", f"kubernetes.io/service-name={RELEASE}-gateway")["items"]
            ips = {a for s in eps for e in s.get("endpoints") or [] if e["conditions"].get("ready")
                   for a in e["addresses"]}
            return ips == {new_ip}

        await asyncio.to_thread(wait, "the gateway Service pointing at the new pod only", endpoints_new_only, 60)
        fresh = await spoken_turn(addr)  # the old pod refuses new sessions while it drains: this is the new one
        # the live conversation goes on on the old pod after its SIGTERM (preStop sleep, then the drain)
        await asyncio.sleep(max(0.0, t_sigterm + 8 - time.monotonic()))
        still_there = any(p["metadata"]["name"] == old[0] for p in pods(component("gateway")))
        await stream_audio(live, pcm, rate)
        await live.wait_turns(2, 120)
        result = await live.finish(120)
    outcomes = [t.outcome for t in result.turns]
    if result.errors or outcomes != ["TURN_OUTCOME_COMPLETED"] * 2:
        raise RuntimeError(f"live conversation: outcomes {outcomes}, errors {[e.message for e in result.errors]}")
    if not still_there:
        raise RuntimeError("the old pod was gone before the second turn: the drain was not exercised")
    await asyncio.to_thread(wait, "the old gateway pod gone", lambda: not any(
        p["metadata"]["name"] == old[0] for p in pods(component("gateway"))), 120)
    return (f"live session kept 2/2 turns across {old[0]}'s SIGTERM; a new session during the drain went to "
            f"{new[0]['metadata']['name']} ({fresh['audio_s']:.1f} s reply)")


def check_drain() -> str:
    return asyncio.run(_drain())


def _sigkill_container(pod: dict) -> None:
    """SIGKILL the pod's container from the host (containerd), as the OOM killer or a crash would: no drain."""
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    sh("ctr", "--address", CONTAINERD, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", cid)


async def _stage_fault(stage: str, how: str) -> str:
    """``how`` = "sigkill" (the stage process dies mid-reply) or "delete" (``kubectl delete pod`` mid-reply: SIGTERM,
    the stage drains). Either way the turn ends cleanly, completed or with an error event, never in silence, and
    the next turn of the same session works once the stage is back."""
    addr = gateway_addr()
    pcm, rate = read_wav(QUESTION)
    await asyncio.to_thread(wait, "the release Ready", lambda: all(
        ready(p) for p in pods(f"app.kubernetes.io/instance={RELEASE}") if not p["metadata"].get("deletionTimestamp")),
        300, 2.0)
    victim = pods(component(stage))[0]
    name, restarts = victim["metadata"]["name"], victim["status"]["containerStatuses"][0]["restartCount"]
    async with grpc.aio.insecure_channel(addr) as ch:
        conv = Conversation(ch, session_config(rate))
        # a reply long enough that the TTS is still owed most of it when its process goes
        conv.send_text("Please count slowly from one to forty, writing every number as a word.")
        hit_at = 0.0

        async def strike() -> None:
            nonlocal hit_at
            async for ev in conv.events():  # strike as soon as the stage's audio starts to flow
                kind = type(ev).__name__
                if kind == "AudioEvent" and not hit_at:
                    if how == "sigkill":
                        await asyncio.to_thread(_sigkill_container, victim)
                    else:
                        await asyncio.to_thread(kubectl, "-n", NS, "delete", "pod", name, "--wait=false")
                    hit_at = time.monotonic()
                if kind in ("TurnDone", "ErrorEvent"):
                    if not hit_at:
                        raise RuntimeError(f"the turn ended before any audio came ({ev}); nothing was hit")
                    return

        await asyncio.wait_for(strike(), 180)
        took = time.monotonic() - hit_at
        first = conv.result.turns[-1] if conv.result.turns else None
        errors = [f"{e.code}: {e.message[:80]}" for e in conv.result.errors]
        if how == "sigkill" and first is not None and first.outcome == "TURN_OUTCOME_COMPLETED" and not errors:
            raise RuntimeError(f"the turn completed although {name}'s process was killed mid-reply")

        def back() -> bool:
            for p in pods(component(stage)):
                if not ready(p) or p["metadata"].get("deletionTimestamp"):
                    continue
                if how == "delete" and p["metadata"]["name"] != name:
                    return True
                if how == "sigkill" and p["status"]["containerStatuses"][0]["restartCount"] > restarts:
                    return True
            return False

        # Ready three polls in a row (a restarted container's pod can read Ready for a moment before its probes
        # ran), then the gateway Ready again (it is NOT_SERVING while a required stage is down)
        seen: list[bool] = []
        await asyncio.to_thread(wait, f"{stage} back and Ready", lambda: seen.append(back()) or seen[-3:] == [True] * 3,
                                300, 2.0)
        await asyncio.to_thread(wait, "the gateway Ready", lambda: all(ready(p) for p in pods(component("gateway"))),
                                120)
        n = len([t for t in conv.result.turns if t.outcome])
        await stream_audio(conv, pcm, rate, realtime=False)
        await conv.wait_turns(n + 1, 240)
        result = await conv.finish(120)
    last = result.turns[-1]
    if last.outcome != "TURN_OUTCOME_COMPLETED" or not last.audio:
        raise RuntimeError(f"the next turn did not recover: {last.outcome}")
    ended = "; ".join(errors) or (first.outcome if first else "?")
    what = "process SIGKILLed" if how == "sigkill" else "pod deleted (SIGTERM)"
    return (f"{name} {what} mid-reply: the turn ended {took:.1f} s later with {ended}; the next turn in the "
            f"same session completed ({len(last.audio) / 2 / result.sample_rate_hz:.1f} s audio)")


def check_stage_killed() -> str:
    return asyncio.run(_stage_fault("tts", "sigkill"))


def check_stage_deleted() -> str:
    return asyncio.run(_stage_fault("tts", "delete"))


# ---------------------------------------------------------------- install, tests, policies, GPU pool


def check_install() -> str:
    kubectl("create", "namespace", NS, check=False)
    kubectl("-n", NS, "apply", "-f", str(ROOT / "infra" / "k8s" / "redis.yaml"))
    status = sh(str(BIN / "helm"), "status", RELEASE, "-n", NS, "-o", "json", check=False)
    if status and json.loads(status)["info"]["status"].startswith("pending-"):  # an interrupted earlier run
        helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m")
    t0 = time.monotonic()
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", NS, "-f", str(CHART / "values-embedded.yaml"),
         "-f", str(ROOT / "infra" / "k8s" / "values-local.yaml"), "--wait", "--timeout", "20m")

    def live_pods() -> list[dict]:  # not a finished test pod, not one of an earlier release still terminating
        return [p for p in kjson("pods")["items"]
                if p["status"].get("phase") != "Succeeded" and not p["metadata"].get("deletionTimestamp")]

    try:
        wait("every pod Ready", lambda: all(ready(p) for p in live_pods()), 900, every=3)
    except TimeoutError:
        raise RuntimeError(f"not ready: {[p['metadata']['name'] for p in live_pods() if not ready(p)]}") from None
    took = time.monotonic() - t0
    ps = live_pods()
    restarts = sum(c.get("restartCount", 0) for p in ps for c in p["status"].get("containerStatuses", []))
    return f"{len(ps)}/{len(ps)} pods Ready in {took:.0f} s (startup/readiness/liveness probes), {restarts} restarts"


def check_security() -> str:
    bad = []
    for p in kjson("pods", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]:
        for c in p["spec"]["containers"]:
            sc = {**p["spec"].get("securityContext", {}), **c.get("securityContext", {})}
            if not (sc.get("readOnlyRootFilesystem") and sc.get("runAsNonRoot") and sc.get("runAsUser", 0) != 0):
                bad.append(f"{p['metadata']['name']}/{c['name']}")
    if bad:
        raise RuntimeError(f"not read-only/non-root: {bad}")
    name = pods(component("gateway"))[0]["metadata"]["name"]
    uid = kubectl("-n", NS, "exec", name, "--", "id", "-u").strip()
    probe = kubectl("-n", NS, "exec", name, "--", "sh", "-c", "touch /app/x 2>&1 || true").strip()
    if uid == "0" or "Read-only" not in probe:
        raise RuntimeError(f"gateway runs as uid {uid}; writing /app: {probe!r}")
    return f"every container read-only root + non-root; in the gateway: uid {uid}, '{probe}'"


def check_helm_test() -> str:
    t0 = time.monotonic()
    out = helm("test", RELEASE, "-n", NS, "--timeout", "10m", timeout=700)
    phases = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("Phase:")]
    if not phases or any(p != "Succeeded" for p in phases):
        raise RuntimeError(f"helm test phases {phases}:\n{out[-1500:]}")
    return f"{len(phases)} test pods Succeeded in {time.monotonic() - t0:.0f} s"


def check_network_policy() -> str:
    """Whether the chart's NetworkPolicies are enforced: a pod outside the release connects to the gateway (open to
    clients) and to the TTS (release-internal). A policy drop is a time-out; a refusal would mean no endpoints."""
    count = len(kjson("networkpolicies")["items"])
    wait("every pod Ready", lambda: all(ready(p) for p in kjson("pods", "-l", f"app.kubernetes.io/instance={RELEASE}")
                                        ["items"] if not p["metadata"].get("deletionTimestamp")), 300)
    targets = {}
    for name in ("gateway", "tts"):
        svc = kjson("service", f"{RELEASE}-{name}")
        targets[name] = (svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"])
    image = pods(component("gateway"))[0]["spec"]["containers"][0]["image"]
    code = ("import socket\n"
            f"for name, addr in {targets!r}.items():\n"
            " s = socket.socket(); s.settimeout(5)\n"
            " try:\n  s.connect(tuple(addr)); print(name, 'connected')\n"
            " except TimeoutError:\n  print(name, 'timeout')\n"
            " except OSError as e:\n  print(name, 'error', e.errno)\n")
    # run to completion, then read its log (an attached `run -i` can miss the output of a short pod)
    kubectl("-n", NS, "delete", "pod", "netpol-probe", "--ignore-not-found", "--wait=true")
    kubectl("-n", NS, "run", "netpol-probe", "--restart=Never", f"--image={image}", "--image-pull-policy=Never",
            "--overrides", json.dumps({"spec": {"automountServiceAccountToken": False}}),
            "--", "python", "-c", code)
    try:
        wait("the probe pod done", lambda: kjson("pod", "netpol-probe")["status"].get("phase")
             in ("Succeeded", "Failed"), 120)
        out = kubectl("-n", NS, "logs", "netpol-probe")
    finally:
        kubectl("-n", NS, "delete", "pod", "netpol-probe", "--ignore-not-found", "--wait=false", check=False)
    words = [line.split(None, 1) for line in out.splitlines()]
    seen = {w[0]: w[1] for w in words if len(w) == 2 and w[0] in targets}
    if seen.get("gateway") != "connected":
        raise RuntimeError(f"the gateway Service is not reachable from a client pod: {seen}")
    if seen.get("tts") == "timeout":
        verdict = "enforced (dropped)"
    elif seen.get("tts") == "connected":
        verdict = ("NOT enforced: the CNI bridge plugin ignores NetworkPolicy (Calico, Cilium or "
                   "kube-router enforce the same objects)")
    else:
        raise RuntimeError(f"inconclusive: {seen}")
    return f"{count} NetworkPolicies; a pod outside the release -> gateway: connected, -> tts: {seen['tts']}: {verdict}"


def check_gpu_scheduling() -> str:
    kubectl("create", "namespace", GPU_NS, check=False)
    values = ROOT / "infra" / "k8s" / "values-gpu-sim.yaml"
    kubectl("apply", "-f", str(ROOT / "infra" / "k8s" / "modelstore-pv.yaml"))
    helm("upgrade", "--install", "gpu-sim", str(CHART), "-n", GPU_NS, "-f", str(CHART / "values-stepaudio.yaml"),
         "-f", str(values), "--timeout", "5m")

    def gpu_pods() -> list[dict]:
        return [p for p in kjson("pods", ns=GPU_NS)["items"]
                if any("nvidia.com/gpu" in (c.get("resources", {}).get("limits") or {})
                       for c in p["spec"]["containers"])]

    def pending_with_event() -> list[str]:
        ps = gpu_pods()
        if not ps or any(p["spec"].get("nodeName") for p in ps):
            return []
        ev = kjson("events", "--field-selector", "reason=FailedScheduling", ns=GPU_NS)["items"]
        return [e["message"] for e in ev] if len(ev) >= len(ps) else []

    events = wait("GPU pods Pending with FailedScheduling", pending_with_event, 60)
    no_gpu = f"{len(gpu_pods())} GPU pods Pending: {events[0][:90]!r}"  # type: ignore[index]
    # the node becomes a GPU-pool node: label, taint, and a fake nvidia.com/gpu extended resource
    kubectl("label", "node", NODE, "stepaudio.ai/pool=gpu", "nvidia.com/gpu.product=NVIDIA-H200", "--overwrite")
    kubectl("taint", "node", NODE, "nvidia.com/gpu=present:NoSchedule", "--overwrite")
    kubectl("patch", "node", NODE, "--subresource=status", "--type=json", "-p",
            json.dumps([{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "8"}]))
    try:
        wait("GPU pods scheduled on the GPU node",
             lambda: all(p["spec"].get("nodeName") == NODE for p in gpu_pods()), 120)
        gpu_names = {p["metadata"]["name"] for p in gpu_pods()}
        cpu_pods = [p for p in kjson("pods", ns=GPU_NS)["items"] if p["metadata"]["name"] not in gpu_names]
        on_gpu_node = [p["metadata"]["name"] for p in cpu_pods if p["spec"].get("nodeName") == NODE]
        if on_gpu_node:
            raise RuntimeError(f"CPU pods landed on the tainted GPU node: {on_gpu_node}")
        return (f"no GPU node: {no_gpu}; node labelled stepaudio.ai/pool=gpu, tainted nvidia.com/gpu, 8 fake GPUs: "
                f"{len(gpu_pods())} GPU pods scheduled there, {len(cpu_pods)} CPU pods kept off it")
    finally:
        helm("uninstall", "gpu-sim", "-n", GPU_NS, "--wait", "--timeout", "3m")
        kubectl("delete", "-f", str(ROOT / "infra" / "k8s" / "modelstore-pv.yaml"), "--wait=false", check=False)
        kubectl("taint", "node", NODE, "nvidia.com/gpu=present:NoSchedule-", check=False)
        kubectl("label", "node", NODE, "stepaudio.ai/pool-", "nvidia.com/gpu.product-", check=False)
        kubectl("patch", "node", NODE, "--subresource=status", "--type=json", "-p",
                json.dumps([{"op": "remove", "path": "/status/capacity/nvidia.com~1gpu"}]), check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="leave the release installed afterwards")
    ap.add_argument("--skip-gpu-sim", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    r = Report()
    if r.run("chart installed, pods ready", check_install):
        r.run("read-only root, non-root", check_security)
        r.run("helm test", check_helm_test)
        r.run("turn through the gateway Service", check_turn_through_service)
        r.run("rollout drain kept the live conversation", check_drain)
        r.run("stage process killed mid-turn, next turn works", check_stage_killed)
        r.run("stage pod deleted mid-turn, next turn works", check_stage_deleted)
        r.run("NetworkPolicies", check_network_policy)
    if not args.skip_gpu_sim:
        r.run("GPU pool scheduling (simulated GPU node)", check_gpu_scheduling)
    if not args.keep:
        sh(str(BIN / "helm"), "uninstall", RELEASE, "-n", NS, "--wait", check=False, timeout=300)
    print()
    print(r.table())
    print(f"\nk8s-e2e: {sum(c.ok for c in r.checks)}/{len(r.checks)} checks passed in {time.monotonic() - t0:.0f} s")
    (STATE / "e2e.json").write_text(json.dumps([c.__dict__ for c in r.checks], indent=1))
    return 0 if all(c.ok for c in r.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
