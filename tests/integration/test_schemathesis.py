"""Generated requests against the OpenAPI schema, with a valid all-scopes key: never a 5xx.

Runs the schemathesis command line against the live server (its pytest plugin does
not support the pytest in use).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import Program


def test_generated_requests_cause_no_server_error(program: Program, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None
    result = subprocess.run(
        [
            st,
            "run",
            f"{program.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {program.admin_key}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--generation-deterministic",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout.lower(), result.stdout[-3000:]
