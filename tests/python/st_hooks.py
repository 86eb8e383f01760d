"""Schemathesis hooks for the gateway's property-based API run (tests/schemathesis.rs).

A gateway answers 502, 503 and 504 when a provider fails or is not configured: those are promised outcomes, in the
API's error envelope. What must never happen is a 500, a 5xx outside the envelope, or a hang (the run's request
timeout catches hangs).
"""

import json

import schemathesis


@schemathesis.check
def no_internal_error(ctx, response, case):
    status = response.status_code
    if status == 500:
        raise AssertionError(f"500 from {case.method} {case.path}: {response.text[:300]}")
    if status >= 500:
        try:
            code = json.loads(response.text)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            raise AssertionError(f"{status} outside the error envelope: {response.text[:300]}")
        if not isinstance(code, str) or not code:
            raise AssertionError(f"{status} without an error code: {response.text[:300]}")
