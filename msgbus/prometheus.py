"""Serve the bus's OpenTelemetry metrics on a Prometheus ``/metrics`` endpoint.

For services that run no OpenTelemetry collector. It uses the OpenTelemetry Prometheus
exporter (``opentelemetry-exporter-prometheus``, extra ``msgbus[prometheus]``): msgbus
records through the OpenTelemetry metrics API, and this reader turns the same instruments
into Prometheus text, so there is one set of instruments whichever way they leave the
process (the exporter serves through ``prometheus-client``'s registry and HTTP server).
"""

from __future__ import annotations

from typing import Any

from msgbus.errors import BackendNotInstalled, ConfigurationError

__all__ = ["MetricsServer", "serve_metrics"]


class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    def __init__(self, server: Any, thread: Any, provider: Any, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.provider = provider
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (the meter provider stays installed). Idempotent."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Install an SDK meter provider with a Prometheus reader as the global one, and serve
    ``/metrics`` on ``host:port`` (port 0 picks a free one) from a daemon thread.

    Every bus of the process (and any other OpenTelemetry instrumentation) reports there.
    Raises :class:`~msgbus.BackendNotInstalled` naming the extra when the packages are
    missing, :class:`~msgbus.ConfigurationError` when the port cannot be bound.
    """
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise BackendNotInstalled(
            f'a Prometheus endpoint needs pip install "msgbus[prometheus]" ({exc.name} missing)'
        ) from None
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from None
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    metrics.set_meter_provider(provider)
    return MetricsServer(server, thread, provider, host, server.server_address[1])
