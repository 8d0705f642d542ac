"""`accumulator send` without a broker: reading, validation, id insertion, progress, exit codes (SPEC §17)."""

from __future__ import annotations

import io
import json
import os
import socket
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.cli import EXIT_DATA, EXIT_OK, EXIT_USAGE, main
from consumer.commands import decode
from consumer.send import Progress, check_lines, read_lines, with_id

POST = (
    b'{"op": "post", "register": "inventory", "recorder": "receipt:1", '
    b'"movements": [{"period": "2026-04-18", "warehouse": 1, "quantity": 100.500, "amount": 1E+2}]}'
)
UNPOST = b'{"op":"unpost","register":"inventory","recorder":"receipt:2"}'
WITH_ID = b'{"op":"unpost","register":"inventory","recorder":"receipt:3","id":"mine"}'


@pytest.fixture(autouse=True)
def _no_accumulator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's ACCUMULATOR_* variables must not leak into these tests."""
    for key in list(os.environ):
        if key.startswith("ACCUMULATOR_"):
            monkeypatch.delenv(key)


def _lines(data: bytes) -> list[tuple[int, bytes]]:
    return list(read_lines(io.BytesIO(data)))


def _ids(*values: str) -> Iterator[str]:
    return iter(values)


# --- reading ------------------------------------------------------------------------------------------------


def test_blank_lines_are_skipped_but_counted() -> None:
    data = b"\n" + POST + b"\n   \n\t\r\n" + UNPOST + b"\r\n\n" + WITH_ID
    assert _lines(data) == [(2, POST), (5, UNPOST), (7, WITH_ID)]


def test_only_the_line_ending_is_removed() -> None:
    assert _lines(b"  " + UNPOST + b" \r\n") == [(1, b"  " + UNPOST + b" ")]


def test_empty_input_has_no_lines() -> None:
    assert _lines(b"") == []
    assert _lines(b"\n\n \n") == []


# --- validation ---------------------------------------------------------------------------------------------


def test_valid_lines_become_messages_keyed_by_recorder_with_their_own_bytes() -> None:
    checked = check_lines(_lines(POST + b"\n" + UNPOST + b"\n"))
    assert checked.invalid == []
    assert [(m.line, m.key, m.value) for m in checked.messages] == [
        (1, b"receipt:1", POST),
        (2, b"receipt:2", UNPOST),
    ]


def test_recorder_key_is_utf8() -> None:
    line = '{"op":"unpost","register":"r","recorder":"Beleg:Größe/€"}'.encode()
    [message] = check_lines(_lines(line)).messages
    assert message.key == "Beleg:Größe/€".encode()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(b"not json", "invalid_json: ", id="not-json"),
        pytest.param(
            b'{"op":"unpost","register":"r","recorder":"x",}', "invalid_json: ", id="trailing-comma"
        ),
        pytest.param(b"[1, 2]", "schema_violation: expected a JSON object, got array", id="array"),
        pytest.param(b'{"op":"burn","register":"r","recorder":"x"}', "schema_violation: ", id="unknown-op"),
        pytest.param(
            b'{"op":"post","register":"r","recorder":"x","movements":[]}',
            "schema_violation: movements: 0 items",
            id="post-no-movements",
        ),
        pytest.param(
            b'{"op":"unpost","register":"r","recorder":"x","recorder":"y"}',
            'schema_violation: duplicate key "recorder"',
            id="duplicate-key",
        ),
        pytest.param(b'{"op":"unpost","register":"r","recorder":"x","n":NaN}', "invalid_json: NaN", id="nan"),
        pytest.param(b"\xff\xfe{}", "invalid_json: not UTF-8", id="not-utf8"),
    ],
)
def test_invalid_lines_are_reported_with_their_number(line: bytes, reason: str) -> None:
    checked = check_lines(_lines(UNPOST + b"\n\n" + line + b"\n" + POST))
    assert [m.line for m in checked.messages] == [1, 4]
    [invalid] = checked.invalid
    assert invalid.line == 3
    assert str(invalid).startswith(f"line 3: {reason}"), str(invalid)


def test_every_invalid_line_is_reported() -> None:
    checked = check_lines(_lines(b"x\n" + UNPOST + b"\n{}\n[]\n"))
    assert [i.line for i in checked.invalid] == [1, 3, 4]
    assert [m.line for m in checked.messages] == [2]


# --- ids ----------------------------------------------------------------------------------------------------


def test_generate_ids_adds_an_id_only_where_none_is_given() -> None:
    checked = check_lines(_lines(UNPOST + b"\n" + WITH_ID), generate_ids=True, new_id=_ids("new-1").__next__)
    first, second = checked.messages
    assert first.value == b'{"id":"new-1","op":"unpost","register":"inventory","recorder":"receipt:2"}'
    assert second.value == WITH_ID  # untouched, byte for byte


def test_default_ids_are_random_uuids() -> None:
    checked = check_lines(_lines(UNPOST + b"\n" + UNPOST), generate_ids=True)
    ids = [decode(m.value).id for m in checked.messages]
    assert len(set(ids)) == 2
    for value in ids:
        assert value is not None
        assert str(uuid.UUID(value)) == value


def test_without_generate_ids_the_value_is_the_line() -> None:
    [message] = check_lines(_lines(UNPOST)).messages
    assert message.value == UNPOST


def test_id_insertion_keeps_numbers_digit_for_digit() -> None:
    line = (
        '{"op":"post","register":"r","recorder":"x","movements":[{"period":"2026-01-01",'
        '"a":0.0000001,"b":100.500,"c":1E+2,"d":-0,"e":' + "9" * 5000 + ',"f":"\\u00e9"}]}'
    )
    spliced = with_id(line, "k")
    assert spliced == '{"id":"k",' + line[1:]
    command = decode(spliced.encode())
    assert command.id == "k"
    assert decode(line.encode()).model_dump() | {"id": "k"} == command.model_dump()


def test_a_null_id_is_replaced_in_place() -> None:
    line = '{ "op" : "unpost", "id" : null , "register":"r","recorder":"x"}'
    assert with_id(line, "k") == '{ "op" : "unpost", "id" : "k" , "register":"r","recorder":"x"}'


def test_an_escaped_id_key_is_recognised() -> None:
    line = '{"op":"unpost","register":"r","recorder":"x","\\u0069d":null}'
    spliced = with_id(line, "k")
    assert spliced == '{"op":"unpost","register":"r","recorder":"x","\\u0069d":"k"}'
    assert decode(spliced.encode()).id == "k"


def test_an_id_inside_a_movement_is_not_the_command_id() -> None:
    line = '{"op":"post","register":"r","recorder":"x","movements":[{"period":"2026-01-01","id":5}]}'
    spliced = with_id(line, "k")
    assert spliced == '{"id":"k",' + line[1:]
    command = decode(spliced.encode())
    assert command.id == "k"
    assert command.to_engine()["movements"][0]["id"] == Decimal(5)


def test_leading_whitespace_is_kept() -> None:
    assert with_id('  \t{"op":"unpost"}', "k") == '  \t{"id":"k","op":"unpost"}'


def test_an_id_needing_escapes_is_written_as_json() -> None:
    assert with_id('{"op":"unpost"}', 'a"b\\c') == '{"id":"a\\"b\\\\c","op":"unpost"}'


# PostgreSQL text holds neither U+0000 nor surrogates, so decode refuses them (tested in test_commands.py).
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
_scalars = st.one_of(
    _text,
    st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(
        lambda d: d if abs(d.adjusted()) < 1000 else Decimal(1)
    ),
)
_movement = st.dictionaries(
    _text.filter(lambda k: k not in ("", "period", "recorder")), _scalars, max_size=4
).map(lambda m: {"period": "2026-04-18", **m})


def _dump(value: Any, indent: int | None, ensure_ascii: bool) -> str:
    def default(obj: object) -> Any:
        raise TypeError(obj)

    # Decimals written as their own text (json cannot), through a placeholder string.
    marks: dict[str, str] = {}

    def mark(v: Any) -> Any:
        if isinstance(v, Decimal):
            key = f"@@{len(marks)}@@"
            marks[key] = str(v)
            return key
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    text = json.dumps(mark(value), indent=indent, ensure_ascii=ensure_ascii, default=default)
    for key, number in marks.items():
        text = text.replace(json.dumps(key), number)
    return text


@settings(max_examples=200, deadline=None)
@given(
    movements=st.lists(_movement, min_size=1, max_size=3),
    null_id=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
    ensure_ascii=st.booleans(),
    new_id=_text.filter(bool),
)
def test_spliced_id_keeps_the_rest_of_the_command(
    movements: list[dict[str, Any]], null_id: bool, indent: int | None, ensure_ascii: bool, new_id: str
) -> None:
    doc: dict[str, Any] = {"op": "post", "register": "inventory", "recorder": "r:1", "movements": movements}
    if null_id:
        doc["id"] = None
    text = _dump(doc, indent, ensure_ascii)
    original = decode(text.encode())
    spliced = decode(with_id(text, new_id).encode())
    assert spliced.id == new_id
    assert spliced.to_engine() == original.to_engine()


# --- progress -----------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_throttled_on_a_terminal() -> None:
    clock, stream = _Clock(), _Tty()
    progress = Progress(stream, 50, clock=clock)
    progress.update(1)  # too soon
    clock.now += 0.6
    progress.update(10)
    clock.now += 0.1
    progress.update(11)  # too soon again
    clock.now += 0.5
    progress.update(40)
    progress.close()
    assert stream.getvalue() == "\rsent 10/50\x1b[K\rsent 40/50\x1b[K\r\x1b[K"


def test_progress_writes_lines_every_few_seconds_elsewhere() -> None:
    clock, stream = _Clock(), io.StringIO()
    progress = Progress(stream, 50, clock=clock)
    clock.now += 1.0
    progress.update(10)
    clock.now += 5.0
    progress.update(20)
    progress.close()
    assert stream.getvalue() == "sent 20/50\n"


def test_a_quick_send_shows_no_progress() -> None:
    stream = _Tty()
    progress = Progress(stream, 5, clock=_Clock())
    progress.update(5)
    progress.close()
    assert stream.getvalue() == ""


# --- the command, up to the point where it would produce --------------------------------------------------


def _closed_port() -> str:
    """A loopback address nothing listens on: the command must not need a broker to get this far."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _send(*argv: str) -> int:
    return main(["send", "--kafka-bootstrap-servers", _closed_port(), "--connect-timeout-ms", "200", *argv])


def _write(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "cmds.jsonl"
    path.write_bytes(data)
    return str(path)


def test_invalid_lines_send_nothing_and_exit_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, UNPOST + b"\n\nnope\n" + POST + b"\n{}\n")
    assert _send("--topic", "t", "--file", path) == EXIT_DATA
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[0].startswith("line 3: invalid_json: ")
    assert err[1].startswith("line 5: schema_violation: ")
    assert err[2] == (
        "accumulator: error: send: 2 of 4 line(s) invalid; nothing sent (--skip-invalid sends the valid ones)"
    )
    assert captured.out == ""


def test_skip_invalid_with_nothing_valid_needs_no_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, b"nope\n\n[]\n")
    assert _send("--topic", "t", "--file", path, "--skip-invalid", "--format", "json") == EXIT_OK
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"sent": 0, "skipped": 2, "topic": "t"}
    assert [line.split(":")[0] for line in captured.err.splitlines()] == ["line 1", "line 3"]


def test_empty_input_sends_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _send("--file", _write(tmp_path, b"\n \n")) == EXIT_OK
    assert capsys.readouterr().out == "sent 0 command(s) to accumulator.commands\n"


def test_stdin_is_read_as_bytes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"nope\n" + UNPOST + b"\n"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    assert _send("--topic", "t") == EXIT_DATA
    assert capsys.readouterr().err.startswith("line 1: invalid_json")


def test_default_topic_is_the_first_configured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, b"")
    assert _send("--kafka-topics", "first, second", "--file", path, "--format", "json") == EXIT_OK
    assert json.loads(capsys.readouterr().out)["topic"] == "first"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--file", "/nonexistent/cmds.jsonl"], "cannot read /nonexistent/cmds.jsonl", id="no-file"
        ),
        pytest.param(["--topic", " ", "--file", "-"], "--topic must not be empty", id="empty-topic"),
        pytest.param(
            ["--producer-extra", '{"acks": "0"}', "--file", "{data}"], "may not set 'acks'", id="acks-0"
        ),
        pytest.param(
            ["--kafka-extra", '{"bootstrap.servers": "x:1"}', "--file", "{data}"],
            "may not set 'bootstrap.servers'",
            id="owned-setting",
        ),
        pytest.param(
            ["--producer-extra", '{"no.such.setting": 1}', "--file", "{data}"],
            "cannot create the Kafka producer",
            id="unknown-librdkafka-setting",
        ),
    ],
)
def test_configuration_problems_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path, UNPOST + b"\n")
    assert _send(*(data if a == "{data}" else a for a in argv)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert len([line for line in err.splitlines() if line.startswith("accumulator: error: ")]) == 1
