"""The demo's producer: the document stream as JSON commands to Kafka at a steady rate, from a thread.

Each command goes out as SPEC §13.1 JSON (key = recorder, an `id` and a `sent_at`), numbers written as exact
decimal text; now and then a malformed message (not JSON, or not a command) joins them for the DLQ. Every
message is folded into the `Expected` model as it is handed to the (idempotent, acks=all) producer, so the
model is exactly what was sent once every delivery is acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from consumer.commands import canonical_json
from consumer.demo_model import Expected
from consumer.demo_stream import DocumentStream, Planned
from consumer.kafka import produce_with_room

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

__all__ = ["MALFORMED_EVERY", "DemoProducer", "encode", "malformed"]

log = logging.getLogger("accumulator.demo")

MALFORMED_EVERY: Final = 250  # one malformed message per this many commands
_SLICE_S: Final = 0.02  # pacing granularity
_PRUNE_AT: Final = 5000  # live documents kept in the model before dropping those no correction can reach


def encode(planned: Planned, command_id: str, sent_at: datetime) -> tuple[bytes, bytes]:
    """(key, value) of one command: key = recorder; the value is canonical JSON (Decimals as digits)."""
    command = dict(planned.command)
    command["id"] = command_id
    command["sent_at"] = sent_at.isoformat().replace("+00:00", "Z")
    return command["recorder"].encode("utf-8"), canonical_json(command).encode("utf-8")


def malformed(n: int, run_tag: str) -> tuple[str, bytes, bytes]:
    """(dead-letter class, key, value) of the n-th malformed message: alternately broken JSON and a bad op."""
    key = f"malformed:{run_tag}:{n}"
    if n % 2:
        value = b'{"op": "post", "register": "demo_inventory", "recorder": "' + key.encode() + b'", "movem'
        return "invalid_json", key.encode(), value
    value = canonical_json({"op": "delete", "register": "demo_inventory", "recorder": key}).encode()
    return "schema_violation", key.encode(), value


class DemoProducer:
    """Produces `rate` messages per second to `topic` until `stop()`; counts acknowledgements.

    Runs on its own thread; `sent`, `acked` and `failed` may be read from any thread. The model is only
    touched by that thread until `join()` returns.
    """

    def __init__(
        self,
        config: Mapping[str, str],
        topic: str,
        stream: DocumentStream,
        model: Expected,
        *,
        rate: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = dict(config)
        self._topic = topic
        self._stream = stream
        self._model = model
        self._rate = rate
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-producer", daemon=True)
        self.sent = 0  # handed to librdkafka
        self.acked = 0
        self.failed = 0
        self.malformed = 0
        self.first_error: str | None = None
        self.crashed: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait until every message is acknowledged or failed (the flush is bounded); True when done."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def unacknowledged(self) -> int:
        return self.sent - self.acked - self.failed

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.acked += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = err.str()

    def _run(self) -> None:
        from confluent_kafka import Producer

        try:
            producer = Producer({**self._config, "on_delivery": self._delivered})
            started = self._clock()
            while not self._stop.is_set():
                due = int(self._rate * (self._clock() - started))
                # A stall (a slow broker) must not turn into a burst of a whole backlog at once.
                for _ in range(min(due - self.sent, self._rate)):
                    self._send(producer)
                producer.poll(0)
                self._stop.wait(_SLICE_S)
            remaining = producer.flush(30)
            if remaining:
                log.warning("demo producer: %d message(s) not acknowledged", remaining)
        except BaseException as exc:  # reported by the demo, which stops instead of waiting forever
            self.crashed = exc
            log.exception("demo producer failed")

    def _send(self, producer: Any) -> None:
        if self.sent % MALFORMED_EVERY == MALFORMED_EVERY - 1:
            error_class, key, value = malformed(self.malformed, self._stream.run_tag)
            self.malformed += 1
            self._model.malformed(error_class)
        else:
            planned = self._stream.next()
            key, value = encode(planned, f"{self._stream.run_tag}-{self.sent}", datetime.now(UTC))
            self._model.sent(planned.command, planned.dead_letter)
            if len(self._model.live) > _PRUNE_AT:
                self._model.prune(self._stream.recent)
        produce_with_room(producer, self._topic, value, key)
        self.sent += 1
