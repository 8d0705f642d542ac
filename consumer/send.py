"""`accumulator send` (SPEC §17): JSON lines of commands, all validated first, then produced to a topic.

The pure half (`read_lines`, `check_lines`, `with_id`, `Progress`) needs no broker. `produce` takes a ready
librdkafka config (`consumer.kafka.producer_config`) and reports what was delivered; the CLI turns its
exceptions and counts into exit codes.

A produced value is the line's own bytes (line ending removed), so numbers arrive digit for digit as the
producer wrote them. `--generate-ids` splices the id into that text rather than re-serialising the command:
a re-encoding would keep the values but could still change their spelling (`0.0000001` reads back from
`Decimal` as `1E-7`, escapes become characters), and the original text is what the sender reviewed.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import IO, TYPE_CHECKING, Any, Final, TextIO

from consumer.commands import Reject, decode

if TYPE_CHECKING:  # confluent_kafka itself is imported when producing, not when the CLI starts
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka import Message as KafkaMessage

__all__ = [
    "Checked",
    "Delivery",
    "Invalid",
    "KafkaSetupError",
    "KafkaUnreachable",
    "Message",
    "Progress",
    "TopicMissing",
    "check_lines",
    "produce",
    "read_lines",
    "with_id",
]

log = logging.getLogger("accumulator.send")

# How long a queued message may wait for the broker's ack when the extras do not say (librdkafka name and
# its alias): the CLI passes `connect_timeout_ms`, so an unreachable broker ends the command, as §17 asks.
_TIMEOUT_KEYS: Final = ("message.timeout.ms", "delivery.timeout.ms")
_JSON_SPACE: Final = " \t\n\r"


# ---------------------------------------------------------------------------------------------------------
# Reading and validating (pure)


@dataclass(frozen=True, slots=True)
class Message:
    """One command ready to produce: the source line number, key (recorder, UTF-8) and value bytes."""

    line: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Invalid:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class Checked:
    """Every non-blank line, either a message or the reason it is invalid (in line order each)."""

    messages: list[Message] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line ending) of each non-blank line; numbers count blank lines too."""
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        yield number, raw


def _new_id() -> str:
    return str(uuid.uuid4())


def check_lines(
    lines: Iterable[tuple[int, bytes]], *, generate_ids: bool = False, new_id: Callable[[], str] = _new_id
) -> Checked:
    """Validate each line as a command (§13.1); with `generate_ids`, give commands without an `id` one."""
    checked = Checked()
    for number, raw in lines:
        try:
            command = decode(raw)
        except Reject as reject:
            checked.invalid.append(Invalid(number, str(reject)))
            continue
        value = raw
        if generate_ids and command.id is None:
            command_id = new_id()
            value = with_id(raw.decode("utf-8"), command_id).encode("utf-8")
            # What is produced is what was validated: decode the spliced text again.
            try:
                again = decode(value)
            except Reject as reject:  # cannot happen for a text decode() accepted; never send a broken one
                checked.invalid.append(Invalid(number, f"adding an id broke the command: {reject}"))
                continue
            if again.id != command_id:
                checked.invalid.append(Invalid(number, "adding an id did not take"))
                continue
        checked.messages.append(Message(number, command.recorder.encode("utf-8"), value))
    return checked


# Only the end offset of each value matters: strings for numbers so no digit limit or float applies.
_SCANNER: Final = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in _JSON_SPACE:
        i += 1
    return i


def _expect(text: str, i: int, chars: str) -> str:
    if i >= len(text) or text[i] not in chars:
        raise ValueError(f"expected one of {chars!r} at offset {i}")
    return text[i]


def _id_span(text: str) -> tuple[int, int] | None:
    """Offsets of the top-level `"id"` member's value in a JSON object text, or None without one."""
    i = _skip_space(text, 0)
    _expect(text, i, "{")
    i = _skip_space(text, i + 1)
    if _expect(text, i, '"}') == "}":
        return None
    while True:
        _expect(text, i, '"')
        key, i = _SCANNER.raw_decode(text, i)  # escapes decoded: "\u0069d" is "id" too
        i = _skip_space(text, i)
        _expect(text, i, ":")
        start = _skip_space(text, i + 1)
        _, end = _SCANNER.raw_decode(text, start)
        if key == "id":
            return start, end
        i = _skip_space(text, end)
        if _expect(text, i, ",}") == "}":
            return None
        i = _skip_space(text, i + 1)


def with_id(text: str, command_id: str) -> str:
    """The command text with `"id": command_id`; everything else kept character for character.

    An `"id": null` member (null is the same as absent, §13.1) gets the value in place; otherwise the member
    goes first in the object, since a command object always has members after it.
    """
    literal = encode_basestring(command_id)
    span = _id_span(text)
    if span is not None:
        start, end = span
        return text[:start] + literal + text[end:]
    brace = _skip_space(text, 0) + 1
    return f'{text[:brace]}"id":{literal},{text[brace:]}'


# ---------------------------------------------------------------------------------------------------------
# Progress (stderr)


class Progress:
    """`sent N/TOTAL`: one refreshed terminal line (at most every 0.5 s), elsewhere a line every 5 s."""

    def __init__(
        self,
        stream: TextIO,
        total: int,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total = total
        self._tty = _isatty(stream)
        self._interval = interval if interval is not None else (0.5 if self._tty else 5.0)
        self._clock = clock
        self._last = clock()
        self._shown = False

    def update(self, sent: int) -> None:
        now = self._clock()
        if now - self._last < self._interval:
            return
        self._last = now
        text = f"sent {sent}/{self._total}"
        self._stream.write(f"\r{text}\x1b[K" if self._tty else text + "\n")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        """Clear a terminal's progress line, so the result printed next starts on a clean line."""
        if self._tty and self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or minimal stream
        return False


# ---------------------------------------------------------------------------------------------------------
# Producing


class KafkaSetupError(Exception):
    """librdkafka refused the configuration (an unknown or invalid pass-through setting)."""


class KafkaUnreachable(Exception):
    """No broker answered within the connect timeout."""


class TopicMissing(Exception):
    """The broker does not have the topic (or does not let this client see it)."""


@dataclass(frozen=True)
class Delivery:
    """Outcome of `produce`: acknowledged, failed, and never handed to librdkafka after a failure."""

    total: int
    sent: int
    failed: int
    unsent: int
    first_error: str | None

    @property
    def ok(self) -> bool:
        return self.sent == self.total


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    first_error: str | None = None

    def on_delivery(self, err: KafkaError | None, msg: KafkaMessage) -> None:
        if err is None:
            self.sent += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = err.str()

    def on_error(self, err: KafkaError) -> None:
        # Only fatal errors stop the run; the others (a broker down for a moment) are retried by librdkafka
        # and end in a delivery report if they last past the message timeout.
        if err.fatal():
            self.failed += 1
            if self.first_error is None:
                self.first_error = f"fatal producer error: {err.str()}"


class _FirstOfEach(logging.Filter):
    """Lets one librdkafka line of each shape through: a down broker repeats its connect error many times."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        shape = (record.levelno, re.sub(r"\d+", "#", record.getMessage()))
        if shape in self._seen:
            return False
        self._seen.add(shape)
        return True


def _message_timeout_ms(config: Mapping[str, str]) -> int | None:
    for key in _TIMEOUT_KEYS:
        if key in config:
            try:
                return int(config[key])
            except ValueError:
                return None  # librdkafka rejects it when the producer is built
    return None


def produce(
    messages: Sequence[Message],
    topic: str,
    config: Mapping[str, str],
    *,
    timeout_ms: int,
    progress: Progress | None = None,
    logger: logging.Logger | None = None,
) -> Delivery:
    """Produce `messages` in order (key = recorder) and wait for every acknowledgement.

    `timeout_ms` bounds the reachability check and, unless the config sets `message.timeout.ms`, how long a
    message may wait for its ack. Production stops at the first failed delivery (later commands for the
    same recorder must not overtake a lost one); what was already handed over is still flushed.
    Raises KafkaSetupError, KafkaUnreachable or TopicMissing before anything is produced.
    """
    from confluent_kafka import KafkaError, KafkaException, Producer

    settings: dict[str, Any] = dict(config)
    message_timeout_ms = _message_timeout_ms(settings)
    if message_timeout_ms is None:
        settings["message.timeout.ms"] = str(timeout_ms)
        message_timeout_ms = timeout_ms
    tally = _Tally()
    settings["error_cb"] = tally.on_error
    quiet = _FirstOfEach()
    if logger is not None:
        settings["logger"] = logger
        logger.addFilter(quiet)
    try:
        try:
            producer = Producer(settings)
        except (KafkaException, ValueError, TypeError) as exc:
            raise KafkaSetupError(f"cannot create the Kafka producer: {exc}") from exc

        # Reachability and topic first: a clear exit 4 or "no such topic" before any message is queued.
        try:
            metadata = producer.list_topics(topic=topic, timeout=timeout_ms / 1000)
        except KafkaException as exc:
            servers = config.get("bootstrap.servers", "?")
            raise KafkaUnreachable(
                f"Kafka unreachable at {servers} within {timeout_ms} ms: {_error_text(exc)}"
            ) from exc
        found = metadata.topics.get(topic)
        error = getattr(found, "error", None)
        if found is None or (
            error is not None
            and error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED)
        ):
            reason = error.str() if error is not None else "not in the cluster metadata"
            raise TopicMissing(f"topic {topic!r}: {reason}")

        unsent = _produce_all(producer, messages, topic, tally, progress)
        _flush(producer, tally, progress, message_timeout_ms / 1000 + 1.0)
    finally:
        if logger is not None:
            logger.removeFilter(quiet)
        if progress is not None:
            progress.close()
    # Anything neither acked nor failed by now timed out in the flush: count it as failed.
    failed = len(messages) - unsent - tally.sent
    first_error = tally.first_error
    if failed and first_error is None:
        first_error = "no acknowledgement before the flush deadline"
    return Delivery(len(messages), tally.sent, failed, unsent, first_error)


def _error_text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    text = arg.str() if hasattr(arg, "str") else str(arg)
    return str(text)


def _produce_all(
    producer: Producer, messages: Sequence[Message], topic: str, tally: _Tally, progress: Progress | None
) -> int:
    """Hand messages to librdkafka until done or a delivery fails; returns how many were never handed over."""
    from confluent_kafka import KafkaException

    from consumer.kafka import produce_with_room

    def waited() -> None:
        if progress is not None:
            progress.update(tally.sent)

    for index, message in enumerate(messages):
        if tally.failed:
            return len(messages) - index
        try:
            produce_with_room(
                producer, topic, message.value, message.key, on_delivery=tally.on_delivery, on_wait=waited
            )
        except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
            tally.failed += 1
            if tally.first_error is None:
                tally.first_error = f"line {message.line}: {_error_text(exc)}"
            return len(messages) - index - 1
        producer.poll(0)
        if progress is not None:
            progress.update(tally.sent)
    return 0


def _flush(producer: Producer, tally: _Tally, progress: Progress | None, limit_s: float) -> None:
    """Wait for outstanding acks (delivered or failed), in slices so the progress line keeps moving."""
    deadline = time.monotonic() + limit_s
    while len(producer) > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            # message.timeout.ms should have failed them by now; drop them rather than block on exit
            log.warning("flush deadline passed", extra={"action": "send", "outstanding": len(producer)})
            producer.purge()
            producer.poll(0)
            return
        producer.flush(min(0.5, left))
        if progress is not None:
            progress.update(tally.sent)
