"""The OpenAPI document at /api/openapi.json is the contract: every API route is in it, it says
what each argument looks like, and schemathesis (every check, `--checks all`) finds the API doing
what it says, over real HTTP, in a bounded derandomized run."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parking.api.ranges import INSTANT_PATTERN

from .conftest import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_PER_OPERATION = 10
SEED = 20261201


def test_every_api_route_is_documented(app, client):
    """New endpoints join the document (and so the schemathesis run) by being API routes."""
    doc = client.get("/api/openapi.json").json
    documented = {(re.sub(r"\{(\w+)\}", r"<\1>", path), method.upper())
                  for path, ops in doc["paths"].items() for method in ops if method != "parameters"}
    served = {(rule.rule, method) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/api/") and rule.rule != "/api/openapi.json"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    served = {(re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", path), method) for path, method in served}
    assert served - documented == set()


def test_document_says_what_arguments_and_answers_are(app, client):
    doc = client.get("/api/openapi.json").json
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            assert op.get("summary"), (method, path)
            assert any(code.startswith("2") for code in op["responses"]), (method, path)
            assert "default" in op["responses"], (method, path)
            for param in op.get("parameters", []):
                if param["name"] in ("from", "to"):
                    assert param["required"] and param["schema"]["pattern"] == INSTANT_PATTERN, (path, param)
                if param["in"] == "query" and param["schema"].get("type") == "string" and param["name"] != "lot":
                    assert "pattern" in param["schema"] or "enum" in param["schema"], (path, param)
            if any(p["in"] == "query" for p in op.get("parameters", [])):
                assert "400" in op["responses"], (method, path)
    post = doc["paths"]["/api/lots"]["post"]
    assert post["requestBody"]["required"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["features"]["items"] == {"$ref": "#/components/schemas/Feature"}
    assert {"400", "401", "403", "413"} <= set(post["responses"])
    assert post["security"] == [{"bearerAuth": []}]
    assert set(doc["components"]["schemas"]["Error"]["required"]) == {"code", "status", "message"}


def test_instant_pattern_is_one_regular_expression_for_both_sides():
    """The pattern is published for ECMA-262 engines: no Python-only syntax in it."""
    assert re.fullmatch(r"[\^$()?:|\[\]\-0-9a-zA-Z{},.+\\*]*", INSTANT_PATTERN)
    assert "\\d" not in INSTANT_PATTERN and "(?P" not in INSTANT_PATTERN


def schemathesis_command(url: str, examples: int, seed: int) -> list[str]:
    """The schemathesis run: every check, every documented operation, derandomized."""
    return [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
        "run", f"{url}/api/openapi.json", "--checks", "all", "--max-examples", str(examples),
        "--seed", str(seed), "--generation-deterministic",
        "--phases", "examples,coverage,fuzzing", "--workers", "1", "--no-color",
        "--header", f"Authorization: Bearer {ADMIN_TOKEN}", "--request-timeout", "20",
    ]


def test_schemathesis_finds_the_api_as_documented(live_server, tmp_path):
    run = subprocess.run(
        schemathesis_command(live_server, EXAMPLES_PER_OPERATION, SEED), cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)},
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-12000:]
    tested = re.search(r"Selected: (\d+)/(\d+)", out)
    assert tested and tested.group(1) == tested.group(2), out[-3000:]
