"""Docker HEALTHCHECK: grpc.health.v1 Check (service "") against HOST:PORT; exit 0 only when SERVING."""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
try:
    with grpc.insecure_channel(target) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
except grpc.RpcError as e:
    print(f"{target}: {e.code().name}", file=sys.stderr)
    sys.exit(1)
sys.exit(0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1)
