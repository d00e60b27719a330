"""The committed protobuf code is what scripts/gen_proto.py makes of proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "libs/loyalty_common/src/loyalty_common/proto"


def tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "proto"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_proto.py"), str(fresh)],
        cwd=ROOT,
        check=True,
    )
    generated, committed = tree(fresh), tree(COMMITTED)
    assert "loyalty/ledger/v1/events_pb2.py" in generated
    assert sorted(committed) == sorted(generated), "run `make proto` and commit the result"
    stale = [name for name in generated if committed[name] != generated[name]]
    assert not stale, f"run `make proto` and commit the result; stale: {stale}"
