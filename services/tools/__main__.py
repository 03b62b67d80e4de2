"""``python -m services.tools``: run the tools service."""

from services.kit.server import GrpcServer, ServiceSpec, run
from services.tools.registry import default_registry
from services.tools.server import SERVICE_NAME, ToolsServicer
from services.tools.settings import ToolsSettings
from stepaudio.tools.v1 import tools_pb2_grpc


def build(settings: ToolsSettings | None = None) -> GrpcServer:
    """The tools server, ready to start."""
    settings = settings or ToolsSettings()
    registry = default_registry(settings.enable_diagnostic_tools, settings.default_timeout_s)
    spec = ServiceSpec(SERVICE_NAME, tools_pb2_grpc.add_ToolsServiceServicer_to_server, ToolsServicer(registry))
    return GrpcServer("tools", settings, [spec])


if __name__ == "__main__":
    run(build())
