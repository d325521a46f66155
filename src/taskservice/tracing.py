"""Traces with the OpenTelemetry SDK: one trace per task, across the API and the worker.

Off by default, and then free: no tracer provider is ever set, so ``tracer`` below stays the
API's proxy of a no-op tracer, each span opened here costs a few function calls and records
nothing, and the SDK is not even imported.

``OTEL_TRACES_EXPORTER`` (in ``Config``) turns it on: ``otlp`` (OTLP over HTTP/protobuf) and/or
``console``. Everything else is OpenTelemetry's own standard variables, which its SDK reads
from the environment itself, the one exception to ``config_loader.py`` being the only reader of
``os.environ``: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``..._HEADERS``, ``..._TIMEOUT``, ``..._COMPRESSION``), ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``,
``OTEL_BSP_*`` (the batching), ``OTEL_PROPAGATORS``.

The shape of a task's trace: ``POST /task`` (the API's request span, from the Falcon
instrumentation) > ``publish <queue>`` (its W3C ``traceparent`` goes into the message's
headers) > in the worker, ``process <queue>`` > ``task.claim``, ``sandbox.run`` (>
``sandbox.create``, ``sandbox.start``, ``sandbox.wait``, ``sandbox.remove``), ``task.finish``.

A provider starts a thread (the batching span processor), so it is made only in the process
that uses it: in each gunicorn worker (``get_app`` runs after the fork, as ``preload_app`` is
off) and in ``run_worker``; never at import.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from opentelemetry import context, propagate, trace

from taskservice.config import Config

log = logging.getLogger(__name__)

# Resolves to the real tracer once a provider is set, and to the no-op one until then.
tracer = trace.get_tracer("taskservice")

_provider = None  # this process's SDK provider, when tracing is on


def configure(config: Config, service_name: str) -> bool:
    """Set up this process's tracer provider if ``OTEL_TRACES_EXPORTER`` asks for one; whether
    tracing is on. ``service_name`` applies unless ``OTEL_SERVICE_NAME`` (or a
    ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) names another."""
    global _provider
    if not config.otel_traces_exporters or _provider is not None:
        return _provider is not None
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Our default first, then what the environment says, which wins.
    resource = Resource.create({SERVICE_NAME: service_name}).merge(OTELResourceDetector().detect())
    # The sampler comes from OTEL_TRACES_SAMPLER; parent-based always-on by default, so the
    # worker follows the API's decision for each task.
    provider = TracerProvider(resource=resource)
    for name in config.otel_traces_exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info(
        "tracing on: %s exporter(s), service %s",
        ", ".join(config.otel_traces_exporters),
        resource.attributes.get(SERVICE_NAME),
    )
    return True


def _exporter(name: str):
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ValueError(f"unknown trace exporter {name!r}")  # config_loader.py admits no other


def configure_api(config: Config) -> None:
    """The API process: the provider and, with it, the Falcon instrumentation, which opens a
    server span around each request (continuing a client's ``traceparent``, if it sends one).
    Called before the app is built: the instrumentation replaces ``falcon.App``."""
    if configure(config, "taskservice-api"):
        from opentelemetry.instrumentation.falcon import FalconInstrumentor

        FalconInstrumentor().instrument()


def shutdown() -> None:
    """Export what is still buffered. (The SDK also does it at interpreter exit.)"""
    if _provider is not None:
        _provider.shutdown()


def _messaging_attributes(queue: str, task_id: uuid.UUID, operation: str) -> dict[str, str]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": operation,
        "messaging.destination.name": queue,
        "messaging.message.id": str(task_id),
        "taskservice.task_id": str(task_id),
    }


def publish_span(queue: str, task_id: uuid.UUID):
    return tracer.start_as_current_span(
        f"publish {queue}",
        kind=trace.SpanKind.PRODUCER,
        attributes=_messaging_attributes(queue, task_id, "send"),
    )


def inject(headers: dict[str, Any]) -> None:
    """Add the current trace context (``traceparent``, ``tracestate``) to message headers;
    nothing when no span is being recorded."""
    propagate.inject(headers)


def extract(headers: Mapping[str, Any] | None) -> context.Context:
    """The trace context a message's headers carry (an empty one when they carry none)."""
    carrier = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes):
            value = value.decode("ascii", errors="replace")
        if isinstance(value, str):
            carrier[key] = value
    return propagate.extract(carrier)


def process_span(queue: str, task_id: uuid.UUID, parent: context.Context):
    """The worker's span for one task message, a child of the publish that sent it."""
    return tracer.start_as_current_span(
        f"process {queue}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=_messaging_attributes(queue, task_id, "process"),
    )
