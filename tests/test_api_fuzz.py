"""Property-based fuzzing of every documented endpoint (schemathesis + hypothesis): no input,
valid or not, makes the server answer 5xx."""

from __future__ import annotations

import itertools
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.live_server import live_server

EXAMPLES_PER_OPERATION = 30


def test_no_input_makes_any_endpoint_answer_a_server_error(store_url: str, tmp_path: Path) -> None:
    with live_server(store_url, tmp_path / "data") as live:
        schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10
        for operation, mode in itertools.product(operations, GenerationMode):
            # Positive cases reach the handlers; negative ones hammer validation.

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=[not_a_server_error])

            try:
                fuzz()
            except Unsatisfiable:
                # An operation without inputs has no invalid form to generate.
                assert mode is GenerationMode.NEGATIVE
