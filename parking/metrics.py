"""`GET /metrics` in the Prometheus text format (prometheus-client), and what feeds it.

This module owns
- the process-wide metrics the web app and the scheduler update as they work: HTTP requests by
  endpoint (the URL rule, so the label set stays small), method and status with their latency
  (`init_app` hooks every request), and job runs (`job_run(name)`: duration and the time of the
  last success, for the rollup job and any other scheduled job);
- `GatewayCollector`: the gateway's figures read when scraped, from the counters the gateway and
  its writer keep anyway (nothing is added to the per-request path): readings received, stored
  and duplicates, answers by CoAP code, refusals by reason, the writer's queue, its group commit
  latency (a histogram), database errors and writer restarts. The writer is a process of its
  own; it reports each group's outcome and commit time over its socket, where the gateway
  counts them, so its figures reach this one endpoint too.
"""
from __future__ import annotations

import contextlib
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

bp = Blueprint("metrics", __name__)

HTTP_REQUESTS = Counter("parking_http_requests", "HTTP requests answered", ["endpoint", "method", "status"])
HTTP_SECONDS = Histogram("parking_http_request_seconds", "HTTP request latency", ["endpoint"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
JOB_SECONDS = Histogram("parking_job_seconds", "Duration of scheduled job runs", ["job"],
                        buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
JOB_FAILURES = Counter("parking_job_failures", "Scheduled job runs that failed", ["job"])
JOB_LAST_SUCCESS = Gauge("parking_job_last_success_timestamp_seconds", "When a job last succeeded (Unix time)",
                         ["job"])

# Buckets of the writer's group commit time (seconds), kept by gateway.writer.WriterStats.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@contextlib.contextmanager
def job_run(name: str):
    """Time one run of a scheduled job; a run that raises counts as a failure (and re-raises)."""
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        JOB_FAILURES.labels(name).inc()
        raise
    finally:
        JOB_SECONDS.labels(name).observe(time.perf_counter() - start)
    JOB_LAST_SUCCESS.labels(name).set(time.time())


class GatewayCollector:
    """The gateway's figures, read from the running gateway of this app (if any) when scraped."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        """Metric families from the gateway's counters; nothing when no gateway runs here."""
        gateway = self.app.extensions.get("parking_gateway")
        if gateway is None or gateway.writer is None:
            return
        stats = gateway.writer.stats
        yield _counter("parking_readings_received", "Readings decoded from accepted requests", stats.received)
        yield _counter("parking_readings_stored", "Readings stored (committed, new)", stats.stored)
        yield _counter("parking_readings_duplicate", "Readings answered 2.04 that were already stored",
                       stats.duplicates)
        answers = CounterMetricFamily("parking_coap_answers", "CoAP answers to POST /occupancy and protected requests",
                                      labels=["code"])
        for code, count in dict(gateway.answers).items():
            answers.add_metric([code], count)
        yield answers
        refused = CounterMetricFamily("parking_coap_refused", "Requests refused before storing, by reason",
                                      labels=["reason"])
        for reason, count in gateway.refusal_counts().items():
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily("parking_writer_queue", "Requests waiting for the writer", value=gateway.writer.queued)
        yield _counter("parking_database_errors", "Groups the writer could not store (database unavailable or error)",
                       stats.database_errors)
        yield _counter("parking_writer_restarts", "Writer processes started again after one died",
                       gateway.writer.restarts)
        yield GaugeMetricFamily("parking_database_available", "1 while the writer can store, else 0",
                                value=1 if gateway.writer.available else 0)
        histogram = HistogramMetricFamily("parking_group_commit_seconds", "Time the writer took per group (store + commit)")
        cumulative, buckets = 0, []
        for bound, count in zip(COMMIT_BUCKETS, stats.commit_buckets):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", stats.groups))
        histogram.add_metric([], buckets, sum_value=stats.commit_seconds)
        yield histogram


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


@bp.get("/metrics")
def metrics():
    """Every metric of this process: the web app's, the scheduler's, the gateway's and its writer's."""
    body = generate_latest(REGISTRY) + generate_latest(current_app.extensions["parking_metrics"])
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Serve /metrics and count every HTTP request."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(app))
    app.extensions["parking_metrics"] = registry
    app.register_blueprint(bp)

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response):
        started = g.pop("metrics_started", None)
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
            HTTP_REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
            HTTP_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
        return response
