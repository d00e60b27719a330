"""The global feed never skips an event whose transaction commits out of position order."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx

from tests.integration.conftest import Program, earn, enrol

INSERT = """INSERT INTO events (event_id, program_id, stream_id, version, type, data,
                                occurred_at, recorded_at, actor, correlation_id)
            VALUES ($1, $2, $3, 1, 'ProgramConfigured', '{"config": {}}', now(), now(),
                    'test', 'test')"""


def _ids(api: httpx.Client, cursor: str | None) -> tuple[list[str], str]:
    page = api.get("/v1/events", params={"limit": 1000, **({"cursor": cursor} if cursor else {})})
    assert page.status_code == 200, page.text
    return [e["event_id"] for e in page.json()["events"]], page.json()["next_cursor"]


def test_late_committing_older_transaction_is_not_skipped(
    program: Program, database_url: str
) -> None:
    async def scenario() -> None:
        older = await asyncpg.connect(database_url)  # takes the oldest transaction id
        blocker = await asyncpg.connect(database_url)  # a newer one, still running
        try:
            older_tx, blocker_tx = older.transaction(), blocker.transaction()
            await older_tx.start()
            await older.fetchval("SELECT pg_current_xact_id()")
            await blocker_tx.start()
            await blocker.fetchval("SELECT pg_current_xact_id()")
            with program.client() as api:
                _, cursor = _ids(api, None)
                member = enrol(api)  # commits with a newer id and a lower position
                earn(api, member)
                ids, _ = _ids(api, cursor)
                assert ids == []  # hidden while older transactions run
                late = uuid.uuid4()
                await older.execute(
                    INSERT, late, uuid.UUID(program.program_id), f"program-late-{late}"
                )
                await older_tx.commit()  # commits a higher position with an older id
                ids, cursor = _ids(api, cursor)
                assert ids == [str(late)]
                await blocker_tx.rollback()
                ids, cursor = _ids(api, cursor)
                assert len(ids) == 2  # the enrolment and the earn: nothing skipped
        finally:
            await older.close()
            await blocker.close()

    asyncio.run(scenario())
