"""charts/stepaudio: helm lint --strict, helm template for both profiles, strict schema validation for Kubernetes
1.29-1.33 (kubernetes-validate), invariants, CRD objects, values.schema.json and validateValues messages."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import schema_gen
from tests.deploy.conftest import CHART, KUBE_VERSIONS, PROFILES, pod_specs, render, render_fail, run_helm

STABLE_SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "KafkaTopic"}
GPU_COMPONENTS = {"tokenizer", "tts", "triton"}  # the vocoder is opt-in (HiFT runs inside TTS)


def _component(d: dict[str, Any]) -> str:
    return d["metadata"]["labels"]["app.kubernetes.io/component"]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_helm_lint_strict(profile: str) -> None:
    proc = run_helm("lint", "--strict", str(CHART), *PROFILES[profile])
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("profile", ["embedded", "stepaudio"])
def test_manifests_validate_strict_all_versions(profile: str) -> None:
    with ThreadPoolExecutor(max_workers=5) as ex:  # render for every version at once (helm subprocesses)
        list(ex.map(lambda kv: render(profile, kube_version=kv), KUBE_VERSIONS))
    errors = []
    checked = 0
    for kv in KUBE_VERSIONS:
        for d in render(profile, kube_version=kv):
            if d["kind"] in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(d, kv, strict=True)
                checked += 1
            except kubernetes_validate.ValidationError as e:
                errors.append(f"k8s {kv} {d['kind']}/{d['metadata']['name']}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"k8s {kv}: no schema for {d['apiVersion']} {d['kind']} (not a known CRD either)")
    assert not errors, "\n".join(errors)
    assert checked > 35 * len(KUBE_VERSIONS)  # every manifest of the release (the vocoder is opt-in)


def test_crd_objects_have_the_expected_shape() -> None:
    docs = render("stepaudio")
    kinds = {d["kind"]: d for d in docs}
    assert CRD_KINDS <= set(kinds), f"stepaudio profile should render {CRD_KINDS}"
    sm = kinds["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]["selector"]["matchLabels"]) <= STABLE_SELECTOR_KEYS
    assert all(ep["port"] == "metrics" for ep in sm["spec"]["endpoints"])
    pr = kinds["PrometheusRule"]
    groups = pr["spec"]["groups"]
    assert groups and all(g["name"] and g["rules"] for g in groups)
    for g in groups:
        for r in g["rules"]:
            assert ("alert" in r) != ("record" in r) and r["expr"]
            if "alert" in r:
                assert r["labels"]["severity"] and r["annotations"]["summary"]
    topics = [d for d in docs if d["kind"] == "KafkaTopic"]
    assert {t["spec"]["topicName"] for t in topics} == {
        "stepaudio.conversation.v1", "stepaudio.conversation.dlq.v1", "stepaudio.preferences.v1"}
    for t in topics:
        assert t["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == "stepaudio-kafka"
        assert t["spec"]["partitions"] >= 1 and t["spec"]["replicas"] >= 1


def test_crds_off_by_default() -> None:
    assert not {d["kind"] for d in render("default")} & CRD_KINDS


@pytest.mark.parametrize("profile", ["default", "embedded", "stepaudio"])
def test_every_container_is_hardened_and_probed(profile: str) -> None:
    docs = render(profile)
    for name, spec in pod_specs(docs):
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        is_test = name.endswith(("test-health", "test-synthetic-turn"))
        for c in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{c['name']}"
            res = c.get("resources", {})
            assert res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"), where
            assert res.get("limits", {}).get("memory"), where
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            if c in spec["containers"] and not is_test:
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert probe in c, f"{where} has no {probe}"


@pytest.mark.parametrize("profile", ["embedded", "stepaudio"])
def test_grpc_services_use_native_grpc_probes(profile: str) -> None:
    for d in render(profile):
        if d["kind"] != "Deployment" or _component(d) in {"triton", "rlhf", "otel-collector"}:
            continue
        c = d["spec"]["template"]["spec"]["containers"][0]
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, f"{d['metadata']['name']} {probe}"
        budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        assert budget >= 120, f"{d['metadata']['name']}: startupProbe allows only {budget}s for model load"


def test_triton_startup_budget_sized_for_engine_load() -> None:
    t = next(d for d in render("stepaudio") if d["kind"] == "Deployment" and _component(d) == "triton")
    c = t["spec"]["template"]["spec"]["containers"][0]
    sp = c["startupProbe"]
    assert sp["httpGet"]["path"] == "/v2/health/ready"
    assert sp["periodSeconds"] * sp["failureThreshold"] >= 600
    assert "--load-model=step_audio_chat" in c["args"] and "--load-model=step_audio_tts_trtllm" in c["args"]
    assert "--model-repository=/opt/stepaudio/models/triton/step_audio_chat" in c["args"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TRITON_WORLD_SIZE"] == "4"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4


@pytest.mark.parametrize("profile", ["embedded", "stepaudio"])
def test_gpu_pods_tolerate_taints_and_request_gpus(profile: str) -> None:
    gpu_seen = set()
    for d in render(profile):
        if d["kind"] != "Deployment":
            continue
        comp = _component(d)
        spec = d["spec"]["template"]["spec"]
        limits = spec["containers"][0]["resources"].get("limits", {})
        gpus = {k: v for k, v in limits.items() if k.startswith("nvidia.com/")}
        if profile == "stepaudio" and comp in GPU_COMPONENTS:
            gpu_seen.add(comp)
            assert gpus, f"{comp} requests no GPU"
            assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"])
            assert spec["nodeSelector"] == {"stepaudio.ai/pool": "gpu"}
            assert d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "GPU rollouts must not need spare GPUs"
            assert "/dev/shm" in {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        else:
            assert not gpus, f"{comp} requests GPUs in profile {profile}"
            assert not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])), comp
    if profile == "stepaudio":
        assert gpu_seen == GPU_COMPONENTS


def test_mig_resource_name_is_used() -> None:
    docs = render("stepaudio", "--set", "vocoder.enabled=true",
                  "--set", "vocoder.gpu.resourceName=nvidia.com/mig-3g.40gb")
    voc = next(d for d in docs if d["kind"] == "Deployment" and _component(d) == "vocoder")
    lim = voc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert lim.get("nvidia.com/mig-3g.40gb") == 1 and "nvidia.com/gpu" not in lim


@pytest.mark.parametrize("profile", ["embedded", "stepaudio"])
def test_selectors_use_only_stable_labels(profile: str) -> None:
    for d in render(profile):
        sel = None
        if d["kind"] in ("Deployment", "PodDisruptionBudget"):
            sel = d["spec"]["selector"]["matchLabels"]
        elif d["kind"] == "Service":
            sel = d["spec"]["selector"]
        elif d["kind"] == "NetworkPolicy":
            sel = d["spec"]["podSelector"]["matchLabels"]
        if sel is not None:
            assert set(sel) <= STABLE_SELECTOR_KEYS, f"{d['kind']}/{d['metadata']['name']}: {sel}"
        if d["kind"] == "Deployment":
            tmpl = d["spec"]["template"]["metadata"]["labels"]
            assert all(tmpl[k] == v for k, v in sel.items())
            assert tmpl["app.kubernetes.io/part-of"] == "stepaudio" and "helm.sh/chart" in d["metadata"]["labels"]


@pytest.mark.parametrize("profile", ["embedded", "stepaudio"])
def test_network_policy_only_gateway_open_outside(profile: str) -> None:
    docs = render(profile)
    release_sel = {"app.kubernetes.io/name": "stepaudio", "app.kubernetes.io/instance": "sa"}
    deployments = {_component(d) for d in docs if d["kind"] == "Deployment"}
    policies = {_component(d): d for d in docs if d["kind"] == "NetworkPolicy"}
    assert deployments <= set(policies), f"components without a NetworkPolicy: {deployments - set(policies)}"
    metrics_ports = {9090, 8002}
    for comp, np in policies.items():
        assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
        for rule in np["spec"]["ingress"]:
            ports = {p["port"] for p in rule["ports"]}
            peers = rule.get("from")
            if comp == "gateway" and ports == {50051}:
                continue  # the one rule open to outside the release
            assert peers, f"{comp}: rule {rule} admits every source"
            for peer in peers:
                if "namespaceSelector" in peer:
                    assert ports <= metrics_ports, f"{comp}: other namespaces may reach {ports}"
                else:
                    assert peer["podSelector"]["matchLabels"] == release_sel, f"{comp}: {peer}"
    assert policies["rlhf"]["spec"]["ingress"] == [] if "rlhf" in policies else True


def test_gateway_drain_settings() -> None:
    gw = next(d for d in render("stepaudio") if d["kind"] == "Deployment" and _component(d) == "gateway")
    spec = gw["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    pre = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = float(env["STEPAUDIO_GATEWAY_DRAIN_GRACE_S"])
    assert spec["terminationGracePeriodSeconds"] >= pre + grace + 5
    assert gw["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize(("profile", "llm_input"), [("embedded", "transcript"), ("stepaudio", "audio_tokens")])
def test_gateway_limits_and_llm_input_reach_the_gateway(profile: str, llm_input: str) -> None:
    from services.gateway.settings import GatewaySettings

    gw = next(d for d in render(profile) if d["kind"] == "Deployment" and _component(d) == "gateway")
    env = {e["name"]: e.get("value") for e in gw["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STEPAUDIO_GATEWAY_LLM_INPUT"] == llm_input
    prefix = "STEPAUDIO_GATEWAY_"
    fields = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix) and v is not None}
    settings = GatewaySettings(**{k: v for k, v in fields.items() if k in GatewaySettings.model_fields})
    assert settings.max_realtime_factor == 4.0 and settings.stall_timeout_s == 10 and settings.max_text_chars == 4000
    assert settings.llm_input == llm_input
    assert settings.tenant_max_sessions == 0 and settings.tenant_audio_s_per_min == 0


def test_gateway_auth_from_a_secret() -> None:
    gw = next(d for d in render("embedded", "--set", "gateway.auth.existingSecret=gw-auth", "--set",
                                "gateway.auth.jwks=true", "--set", "gateway.auth.jwtAudience=voice")
              if d["kind"] == "Deployment" and _component(d) == "gateway")
    spec = gw["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["STEPAUDIO_GATEWAY_API_KEYS_FILE"] == "/etc/stepaudio/auth/api-keys.json"
    assert env["STEPAUDIO_GATEWAY_JWKS_FILE"] == "/etc/stepaudio/auth/jwks.json"
    assert env["STEPAUDIO_GATEWAY_JWT_AUDIENCE"] == "voice"
    assert {"name": "auth", "secret": {"secretName": "gw-auth"}} in spec["volumes"]
    idp = next(d for d in render("embedded", "--set", "gateway.auth.jwksUrl=https://idp.example/jwks",
                                 "--set", "gateway.auth.jwtIssuer=https://idp.example")
               if d["kind"] == "Deployment" and _component(d) == "gateway")
    idp_env = {e["name"]: e.get("value") for e in idp["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert idp_env["STEPAUDIO_GATEWAY_JWKS_URL"] == "https://idp.example/jwks"
    assert idp_env["STEPAUDIO_GATEWAY_JWT_ISSUER"] == "https://idp.example"
    plain = next(d for d in render("embedded") if d["kind"] == "Deployment" and _component(d) == "gateway")
    assert "STEPAUDIO_GATEWAY_API_KEYS_FILE" not in {e["name"] for e in plain["spec"]["template"]["spec"][
        "containers"][0]["env"]}


def test_internal_credential_reaches_every_stage_and_the_gateway() -> None:
    docs = render("embedded", "--set", "internalAuth.existingSecret=svc-token")
    seen = {}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        name = _component(d)
        var = "STEPAUDIO_GATEWAY_STAGE_TOKEN" if name == "gateway" else f"STEPAUDIO_{name.upper()}_AUTH_TOKEN"
        if var in env:
            seen[name] = env[var]["valueFrom"]["secretKeyRef"]
    assert {"gateway", "vad", "tokenizer", "llm", "tools", "tts"} <= set(seen), seen
    assert all(ref == {"name": "svc-token", "key": "token"} for ref in seen.values())


def test_network_policies_deny_egress_but_dns_release_and_dependencies() -> None:
    policies = [d for d in render("embedded") if d["kind"] == "NetworkPolicy"]
    assert policies
    for np in policies:
        spec = np["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"], np["metadata"]["name"]
        ports = [{p["port"] for p in rule.get("ports", [])} for rule in spec["egress"]]
        assert {53} in ports  # DNS
        assert any("to" in rule and "podSelector" in rule["to"][0] for rule in spec["egress"])  # the release
        assert any({6379, 9092} <= p for p in ports)  # Redis, Kafka (values: networkPolicy.egress.dependencies)
    open_ = [d for d in render("embedded", "--set", "networkPolicy.egress.enabled=false") if d["kind"] ==
             "NetworkPolicy"]
    assert all(d["spec"]["policyTypes"] == ["Ingress"] and "egress" not in d["spec"] for d in open_)


def test_gateway_tls_keeps_probes_on_a_plaintext_health_port() -> None:
    def gateway(*args: str) -> dict:
        d = next(d for d in render("embedded", *args) if d["kind"] == "Deployment" and _component(d) == "gateway")
        return d["spec"]["template"]["spec"]

    spec = gateway("--set", "gateway.tls.existingSecret=gw-tls")
    c = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["STEPAUDIO_GATEWAY_TLS_CERT_FILE"] == "/etc/stepaudio/tls/tls.crt"
    assert env["STEPAUDIO_GATEWAY_HEALTH_PORT"] == "8081"
    assert all(c[p]["grpc"]["port"] == 8081 for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert c["livenessProbe"]["grpc"]["service"] == "liveness"
    assert {"name": "tls", "secret": {"secretName": "gw-tls"}} in spec["volumes"]
    plain = gateway()["containers"][0]
    assert plain["readinessProbe"]["grpc"]["port"] == 50051 and "STEPAUDIO_GATEWAY_TLS_CERT_FILE" not in {
        e["name"] for e in plain["env"]}


def test_hpas() -> None:
    docs = render("stepaudio")
    hpas = {_component(d): d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert {"gateway", "vad", "llm", "tools", "triton"} <= set(hpas)
    gw = {m["pods"]["metric"]["name"] for m in hpas["gateway"]["spec"]["metrics"] if m["type"] == "Pods"}
    assert gw == {"stepaudio_gateway_active_sessions", "stepaudio_turn_time_to_first_audio_p95_seconds"}
    tr = [m for m in hpas["triton"]["spec"]["metrics"]]
    assert [m["pods"]["metric"]["name"] for m in tr] == ["stepaudio_triton_queue_time_per_request_us"]
    for comp in ("vad", "llm", "tools"):
        assert hpas[comp]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    for d in docs:  # HPA-managed Deployments leave replicas to the HPA
        if d["kind"] == "Deployment" and _component(d) in hpas:
            assert "replicas" not in d["spec"], d["metadata"]["name"]


def test_model_store_pvc_and_env() -> None:
    docs = render("stepaudio", "--set", "vocoder.enabled=true")
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and "models" in d["metadata"]["name"])
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    for d in docs:
        if d["kind"] == "Deployment" and _component(d) in ("tokenizer", "tts", "vocoder"):
            c = d["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in c["env"]}
            comp = _component(d)
            want = {"tokenizer": "/models/Step-Audio-Tokenizer", "tts": "/models/Step-Audio-TTS-3B",
                    "vocoder": "/models/Step-Audio-TTS-3B/CosyVoice-300M-25Hz"}[comp]  # docs/STEPAUDIO.md layout
            assert env[f"STEPAUDIO_{comp.upper()}_MODEL_DIR"] == want
            assert {"mountPath": "/models", "name": "models", "readOnly": True} in c["volumeMounts"]


def test_object_store_init_container() -> None:
    docs = render("stepaudio", "--set", "triton.modelRepository.source=objectStore",
                  "--set", "triton.modelRepository.objectStore.uri=s3remote:bucket/triton")
    t = next(d for d in docs if d["kind"] == "Deployment" and _component(d) == "triton")
    init = t["spec"]["template"]["spec"]["initContainers"][0]
    assert init["name"] == "fetch-model-repository" and "s3remote:bucket/triton" in init["args"]
    args = t["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model-repository=/model-repository/step_audio_chat" in args


def test_kafka_sasl_tls_from_existing_secret() -> None:
    gw = next(d for d in render("stepaudio") if d["kind"] == "Deployment" and _component(d) == "gateway")
    env = {e["name"]: e for e in gw["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STEPAUDIO_CONVLOG_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["STEPAUDIO_CONVLOG_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "stepaudio-kafka-user"
    assert env["STEPAUDIO_GATEWAY_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "stepaudio-redis"
    assert env["STEPAUDIO_CONVLOG_BOOTSTRAP_SERVERS"]["value"] == "stepaudio-kafka-bootstrap.kafka.svc:9093"


def test_helm_test_pods() -> None:
    pods = [d for d in render("embedded") if d["kind"] == "Pod"]
    assert {p["metadata"]["annotations"]["helm.sh/hook"] for p in pods} == {"test"}
    health = next(p for p in pods if p["metadata"]["name"].endswith("test-health"))
    script = health["spec"]["containers"][0]["args"][0]
    compile(script, "test-health", "exec")  # the inline checker is valid Python
    assert "sa-stepaudio-gateway:50051" in script and "/v2/models/%s/ready" in script
    turn = next(p for p in pods if p["metadata"]["name"].endswith("test-synthetic-turn"))
    c = turn["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "stepaudio.cli"] and "--synthetic" in c["args"]


# ---------------------------------------------------------------- values.schema.json and validateValues

def test_schema_in_sync_with_values() -> None:
    schema, missing = schema_gen.generate()
    assert not missing, f"values without a ## @param line: {missing}"
    committed = json.loads((CHART / "values.schema.json").read_text())
    assert committed == json.loads(schema_gen.render()), "run: python tests/deploy/schema_gen.py"


def test_schema_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(v: Any, s: dict[str, Any], path: str) -> None:
        assert "type" in s, f"{path}: no type"
        if isinstance(v, dict) and "properties" in s:
            assert s.get("additionalProperties") is False, path
            for k, sub in v.items():
                assert k in s["properties"], f"{path}.{k} not in the schema"
                walk(sub, s["properties"][k], f"{path}.{k}")
    walk(values, schema, "")


SCHEMA_CASES = [
        (["--set", "profile=gpu"], ["/profile", "embedded", "stepaudio"]),
        (["--set", "gateway.port=70000"], ["/gateway/port", "65,535"]),
        (["--set", "triton.tensorParallelSize=3"], ["/triton/tensorParallelSize"]),
        (["--set", "gateway.bogus=1"], ["bogus"]),
        (["--set", "gpu.resourceName=amd.com/gpu"], ["/gpu/resourceName"]),
        (["--set", "kafka.sasl.mechanism=GSSAPI"], ["/kafka/sasl/mechanism"]),
        (["--set-string", "gateway.replicaCount=two"], ["/gateway/replicaCount"]),
        (["--set", "triton.modelRepository.source=nfs"], ["/triton/modelRepository/source"]),
]


@pytest.mark.parametrize(("args", "expect"), SCHEMA_CASES)
def test_schema_rejects_bad_values(args: list[str], expect: list[str]) -> None:
    err = _failures()[tuple(args)]
    for e in expect:
        assert e in err, f"message does not name {e!r}:\n{err}"


VALIDATE_CASES = [
        (["--set", "profile=stepaudio"], "profile=stepaudio needs GPUs: set gpu.enabled=true"),
        (["-f", str(CHART / "values-stepaudio.yaml"), "--set", "triton.gpu.count=6"],
         "triton.tensorParallelSize=4 does not divide triton.gpu.count=6"),
        (["-f", str(CHART / "values-stepaudio.yaml"), "--set", "triton.gpu.count=2"],
         "triton.gpu.count=2 is smaller than triton.tensorParallelSize=4"),
        (["--set", "triton.tensorParallelSize=2"], "triton.tensorParallelSize=2 needs profile=stepaudio"),
        (["--set", "tts.gpu.count=1"], "tts.gpu.count=1 but gpu.enabled=false"),
        (["--set", "kafka.sasl.enabled=true"], "kafka.sasl.enabled=true needs kafka.sasl.existingSecret"),
        (["--set", "rlhf.enabled=true"], "rlhf.enabled=true consumes Kafka: set kafka.bootstrapServers"),
        (["--set", "triton.modelRepository.source=objectStore"], "needs triton.modelRepository.objectStore.uri"),
        (["--set", "vad.autoscaling.minReplicas=5", "--set", "vad.autoscaling.maxReplicas=2"],
         "vad.autoscaling.minReplicas=5 is above vad.autoscaling.maxReplicas=2"),
        (["-f", str(CHART / "values-stepaudio.yaml"), "--set", "modelStore.enabled=false"],
         "set modelStore.enabled=true"),
]
_FAILURES: dict[tuple[str, ...], str] = {}


def _failures() -> dict[tuple[str, ...], str]:
    """Render every failing case once, in parallel (helm processes; the 2-core CI box is otherwise idle-waiting)."""
    if not _FAILURES:
        cases = [tuple(a) for a, _ in SCHEMA_CASES + VALIDATE_CASES]
        with ThreadPoolExecutor(max_workers=6) as ex:
            _FAILURES.update(zip(cases, ex.map(lambda a: render_fail(*a), cases), strict=True))
    return _FAILURES


@pytest.mark.parametrize(("args", "expect"), VALIDATE_CASES)
def test_validate_values_messages(args: list[str], expect: str) -> None:
    err = _failures()[tuple(args)]
    assert "VALUES VALIDATION" in err and expect in err, err


@pytest.mark.parametrize("profile", ["embedded", "stepaudio"])
def test_tts_samples_on_triton_in_the_stepaudio_profile(profile: str) -> None:
    """stepaudio: TTS-3B runs on Triton (the chart's step_audio_tts model), which the TTS service now calls."""
    from services.tts.backends.stepaudio import StepAudioTtsOptions

    tts = next(d for d in render(profile) if d["kind"] == "Deployment" and _component(d) == "tts")
    env = {e["name"]: e.get("value") for e in tts["spec"]["template"]["spec"]["containers"][0]["env"]}
    if profile == "embedded":
        assert "STEPAUDIO_TTS_LM_BACKEND" not in env
        return
    assert env["STEPAUDIO_TTS_LM_BACKEND"] == "triton"
    assert env["STEPAUDIO_TTS_TRITON_URLS"].endswith("-triton:8001")
    opts = StepAudioTtsOptions(lm_backend=env["STEPAUDIO_TTS_LM_BACKEND"], triton_urls=env["STEPAUDIO_TTS_TRITON_URLS"])
    assert opts.triton_model == "step_audio_tts"


def test_vocoder_is_opt_in() -> None:
    """One design: HiFT runs inside TTS, so the default deployment has no vocoder nobody calls."""
    for profile in ("embedded", "stepaudio"):
        assert not any(d["kind"] == "Deployment" and _component(d) == "vocoder" for d in render(profile))
    assert any(d["kind"] == "Deployment" and _component(d) == "vocoder"
               for d in render("stepaudio", "--set", "vocoder.enabled=true"))
