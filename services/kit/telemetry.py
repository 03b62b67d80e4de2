"""Logging (structlog JSON), OpenTelemetry traces and metrics, and the Prometheus scrape endpoint.

One call, :func:`setup`, per process. Traces go to OTLP/gRPC when ``otlp_endpoint`` is set; metrics are exposed
for Prometheus on ``metrics_port`` and pushed over OTLP too when an endpoint is set. Logs carry ``trace_id``,
``span_id`` and any ids bound with ``structlog.contextvars`` (the interceptor binds ``session_id``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from services.kit.settings import ServiceSettings

_configured: Telemetry | None = None


@dataclass
class Telemetry:
    """Handles of the process's telemetry; ``shutdown`` flushes spans and metrics."""

    service_name: str
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    metrics_port: int

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush(5000)
        if self.meter_provider is not None:
            self.meter_provider.force_flush(5000)


def _add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event


def setup_logging(service_name: str, level: str = "INFO", json_logs: bool = True) -> None:
    """Configure structlog and stdlib logging to write one JSON object per line to stderr.

    Lines from stdlib loggers (background threads such as the conversation log's, kafka-python, grpc) go through the
    same processors: every line has a level, a UTC timestamp, the logger name, and trace ids where a span is current.
    """
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    def add_service(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("service", service_name)  # every thread's lines, not only the bound context's
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(lvl)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service_name)


def setup(service_name: str, settings: ServiceSettings) -> Telemetry:
    """Set up logs, traces and metrics once per process; later calls return the first result."""
    global _configured
    if _configured is not None:
        return _configured
    setup_logging(service_name, settings.log_level, settings.log_json)
    resource = Resource.create({"service.name": service_name, "service.namespace": "stepaudio"})

    tracer_provider = TracerProvider(resource=resource)
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(tracer_provider)

    readers: list[MetricReader] = []
    metrics_port = 0
    if settings.metrics_port:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
        metrics_port = settings.metrics_port
        readers.append(PrometheusMetricReader())
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=settings.otlp_endpoint, insecure=True), 10000)
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)
    _configured = Telemetry(service_name, tracer_provider, meter_provider, metrics_port)
    return _configured


def tracer() -> trace.Tracer:
    """The tracer for stepaudio code."""
    return trace.get_tracer("stepaudio")


def meter() -> metrics.Meter:
    """The meter for stepaudio code."""
    return metrics.get_meter("stepaudio")
