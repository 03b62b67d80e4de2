"""TLS on the public port and the service credential on internal calls, with real gRPC servers on loopback."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gateway_fakes import FakeStages
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.server import SERVICE_NAME, ConversationServicer
from services.gateway.settings import GatewaySettings
from services.gateway.stages import GrpcStages
from services.gateway.store import MemoryStore
from services.kit.errors import StageError
from services.kit.server import GrpcServer, ServiceSpec
from services.kit.settings import ServiceSettings
from services.tools.registry import default_registry
from services.tools.server import SERVICE_NAME as TOOLS
from services.tools.server import ToolsServicer
from stepaudio.client import Conversation, session_config
from stepaudio.conversation.v1 import conversation_pb2_grpc
from stepaudio.tools.v1 import tools_pb2, tools_pb2_grpc


def self_signed(tmp: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp / "tls.crt").write_bytes(pem)
    (tmp / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return tmp / "tls.crt", tmp / "tls.key", pem


async def test_the_public_port_serves_tls(tmp_path: Path) -> None:
    crt, key, pem = self_signed(tmp_path)
    settings = GatewaySettings(port=0, host="127.0.0.1", log_json=False, log_level="WARNING", conversation_log=False,
                               tls_cert_file=str(crt), tls_key_file=str(key), health_port=0)
    servicer = ConversationServicer(FakeStages(), MemoryStore(), settings)
    server = GrpcServer("gateway-tls-test", settings, [ServiceSpec(
        SERVICE_NAME, conversation_pb2_grpc.add_ConversationServiceServicer_to_server, servicer)])
    port = await server.start()
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=pem)
        async with grpc.aio.secure_channel(f"localhost:{port}", creds) as ch:
            conv = Conversation(ch, session_config(16000))
            conv.send_text("Hello over TLS.")
            await conv.wait_turns(1, 30)
            result = await conv.finish(30)
        assert result.reply_text
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await Conversation(plain, session_config(16000)).finish(10)  # plaintext is refused
        # Probes that cannot speak TLS get health (and only health) on the plaintext health port.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as probe:
            stub = health_pb2_grpc.HealthStub(probe)
            for service in ("", "liveness"):
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await Conversation(probe, session_config(16000)).finish(10)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)


async def test_stages_require_the_service_credential_and_the_gateway_sends_it() -> None:
    tools = GrpcServer("tools-auth-test", ServiceSettings(port=0, host="127.0.0.1", log_level="WARNING",
                                                         auth_token="s3cret"),
                       [ServiceSpec(TOOLS, tools_pb2_grpc.add_ToolsServiceServicer_to_server,
                                    ToolsServicer(default_registry()))])
    port = await tools.start()
    addr = f"127.0.0.1:{port}"
    try:
        request = tools_pb2.ExecuteToolRequest(name="calculator", arguments_json=json.dumps({"expression": "6*7"}))
        good = GrpcStages(GatewaySettings(tools_addr=addr, stage_token="s3cret", conversation_log=False))
        assert json.loads((await good.execute_tool(request, 5)).result_json)["result"] == 42
        for wrong in ("", "other-secret"):
            bad = GrpcStages(GatewaySettings(tools_addr=addr, stage_token=wrong, conversation_log=False))
            with pytest.raises(StageError) as info:
                await bad.execute_tool(request, 5)
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            await bad.close()
        async with grpc.aio.insecure_channel(addr) as raw:  # the secret itself, sent as a bearer: refused
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await tools_pb2_grpc.ToolsServiceStub(raw).ExecuteTool(request, timeout=5,
                                                                        metadata=(("authorization", "Bearer s3cret"),))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await good.close()
    finally:
        await tools.stop(0)
