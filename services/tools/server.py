"""gRPC transport for the tools stage."""

from __future__ import annotations

import json

import grpc
from google.protobuf import duration_pb2

from services.tools.registry import ToolRegistry
from stepaudio.tools.v1 import tools_pb2, tools_pb2_grpc

SERVICE_NAME = tools_pb2.DESCRIPTOR.services_by_name["ToolsService"].full_name


class ToolsServicer(tools_pb2_grpc.ToolsServiceServicer):
    """ListTools and ExecuteTool over a :class:`ToolRegistry`."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    async def ListTools(  # noqa: N802
        self, request: tools_pb2.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.ListToolsResponse:
        resp = tools_pb2.ListToolsResponse()
        for t in self.registry.list():
            timeout = duration_pb2.Duration()
            timeout.FromMilliseconds(int(t.timeout_s * 1000))
            resp.tools.add(name=t.name, description=t.description, parameters_json_schema=json.dumps(t.parameters),
                           survives_interruption=t.survives_interruption, default_timeout=timeout)
        return resp

    async def ExecuteTool(  # noqa: N802
        self, request: tools_pb2.ExecuteToolRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.ExecuteToolResponse:
        timeout = request.timeout.ToMilliseconds() / 1000 if request.HasField("timeout") else None
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout or remaining, remaining)
        result, ms = await self.registry.execute(request.name, request.arguments_json, timeout)
        return tools_pb2.ExecuteToolResponse(result_json=json.dumps(result), duration_ms=ms, call_id=request.call_id)
