"""GET /metrics (Prometheus text format): it parses, and its counters move when readings arrive,
including those the gateway's writer process reports."""
from __future__ import annotations

import asyncio
import json
import time

import aiocoap
from aiocoap import Message
from aiocoap.numbers.codes import Code
from prometheus_client.parser import text_string_to_metric_families


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def post_all(address, payloads) -> list[Code]:
    async def main():
        context = await aiocoap.Context.create_client_context()
        try:
            codes = []
            for payload in payloads:
                request = Message(code=Code.POST, uri=f"coap://{address[0]}:{address[1]}/occupancy",
                                  payload=json.dumps(payload).encode(), content_format=50)
                codes.append((await context.request(request).response).code)
            return codes
        finally:
            await context.shutdown()

    return asyncio.run(main())


def test_metrics_parse_and_move_with_readings(coap_gateway, client):
    before = scrape(client)
    ts = time.time() - 60
    codes = post_all(coap_gateway, [
        {"bay": "PRW-001", "occupied": True, "ts": ts, "seq": 1},
        {"bay": "PRW-001", "occupied": True, "ts": ts, "seq": 1},  # a duplicate: 2.04, stored once
        [{"bay": "PRW-002", "occupied": False, "ts": ts}, {"bay": "PRW-003", "occupied": True, "ts": ts}],
        {"bay": "NOPE-1", "occupied": True},
        {"bay": "PRW-001", "occupied": "yes"},
    ])
    assert codes == [Code.CHANGED, Code.CHANGED, Code.CHANGED, Code.NOT_FOUND, Code.BAD_REQUEST]
    after = scrape(client)

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("parking_readings_received_total") == 5
    assert moved("parking_readings_stored_total") == 3
    assert moved("parking_readings_duplicate_total") == 1
    assert moved("parking_coap_answers_total", code="2.04") == 3
    assert moved("parking_coap_answers_total", code="4.04") == 1
    assert moved("parking_coap_answers_total", code="4.00") == 1
    assert moved("parking_group_commit_seconds_count") >= 1
    assert moved("parking_group_commit_seconds_sum") > 0
    assert after[("parking_writer_queue", ())] == 0
    assert after[("parking_database_available", ())] == 1
    assert moved("parking_http_requests_total", endpoint="/metrics", method="GET", status="200") == 1
    assert moved("parking_http_request_seconds_count", endpoint="/metrics") == 1


def test_metrics_count_refusals_by_reason(city, client):
    from gateway.server import run_in_thread

    city.config["SENSOR_AUTH"] = "oscore"
    handle = run_in_thread(city, "127.0.0.1", 0)
    try:
        before = scrape(client)
        assert post_all(("127.0.0.1", handle.port), [{"bay": "PRW-001", "occupied": True}]) == [Code.UNAUTHORIZED]
        after = scrape(client)
    finally:
        handle.stop()
    key = ("parking_coap_refused_total", (("reason", "unprotected"),))
    assert after[key] - before.get(key, 0) == 1


def test_job_runs_are_timed_with_their_last_success(city, client):
    from parking.jobs import rollup_job

    rollup_job(city)
    samples = scrape(client)
    assert samples[("parking_job_seconds_count", (("job", "rollup"),))] >= 1
    assert time.time() - samples[("parking_job_last_success_timestamp_seconds", (("job", "rollup"),))] < 60
