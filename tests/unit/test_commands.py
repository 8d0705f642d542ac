"""Wire contract (SPEC §13.1-13.2): strict decoding, reject classes, exact numbers, fingerprints, schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consumer.commands import (
    SCHEMA_PATH,
    Post,
    Reject,
    Repost,
    Unpost,
    canonical_json,
    decode,
    engine_json,
    fingerprint,
    main,
    schema_text,
)

PERIOD = '"period":"2026-04-18"'


def cmd(**fields: Any) -> bytes:
    """A valid post, with `fields` replacing or (value `...`) removing envelope fields."""
    doc: dict[str, Any] = {
        "op": "post",
        "register": "inventory",
        "recorder": "receipt:7001",
        "movements": [{"period": "2026-04-18", "warehouse": 1, "quantity": "100.5"}],
    }
    for k, v in fields.items():
        if v is ...:
            doc.pop(k)
        else:
            doc[k] = v
    return json.dumps(doc).encode()


def mv(body: str) -> bytes:
    """A post whose single movement is the JSON object text `body`."""
    return b'{"op":"post","register":"inventory","recorder":"r1","movements":[' + body.encode() + b"]}"


BAD = [
    # invalid_json: bytes that are not strict RFC 8259 JSON text
    pytest.param(None, "invalid_json", id="tombstone"),
    pytest.param(b"", "invalid_json", id="empty"),
    pytest.param(b"   ", "invalid_json", id="blank"),
    pytest.param(b"{", "invalid_json", id="truncated"),
    pytest.param(b"\xff\xfe{}", "invalid_json", id="not-utf8"),
    pytest.param('{"op":"post"}'.encode("utf-16"), "invalid_json", id="utf16"),
    pytest.param(b"\xef\xbb\xbf" + cmd(), "invalid_json", id="bom"),
    pytest.param(b"NaN", "invalid_json", id="nan-top"),
    pytest.param(mv('{"period":"2026-04-18","q":NaN}'), "invalid_json", id="nan"),
    pytest.param(mv('{"period":"2026-04-18","q":Infinity}'), "invalid_json", id="infinity"),
    pytest.param(mv('{"period":"2026-04-18","q":-Infinity}'), "invalid_json", id="minus-infinity"),
    pytest.param(mv('{"period":"2026-04-18","q":01}'), "invalid_json", id="leading-zero"),
    pytest.param(mv('{"period":"2026-04-18","q":+1}'), "invalid_json", id="plus-sign"),
    pytest.param(mv('{"period":"2026-04-18","q":.5}'), "invalid_json", id="bare-fraction"),
    pytest.param(mv('{"period":"2026-04-18","q":1.}'), "invalid_json", id="trailing-point"),
    pytest.param(mv("{'period':'2026-04-18'}"), "invalid_json", id="single-quotes"),
    pytest.param(mv('{"period":"2026-04-18",}'), "invalid_json", id="trailing-comma"),
    pytest.param(mv('{"period":"2026\x01-04-18"}'), "invalid_json", id="raw-control-char"),
    pytest.param(cmd() + b" {}", "invalid_json", id="trailing-data"),
    pytest.param(b'{"op":"post","op":"post",', "invalid_json", id="broken-beats-duplicate"),
    # schema_violation: valid JSON that breaks §13.1
    pytest.param(b"[]", "schema_violation", id="array"),
    pytest.param(b'"post"', "schema_violation", id="string"),
    pytest.param(b"null", "schema_violation", id="null"),
    pytest.param(b"{}", "schema_violation", id="empty-object"),
    pytest.param(b'{"op":"post","register":"stock"}', "schema_violation", id="no-recorder"),
    pytest.param(b'{"op":"delete","register":"s","recorder":"d1"}', "schema_violation", id="bad-op"),
    pytest.param(cmd(op="POST"), "schema_violation", id="op-case"),
    pytest.param(cmd(op=1), "schema_violation", id="op-number"),
    pytest.param(cmd(op=...), "schema_violation", id="no-op"),
    pytest.param(cmd(extra=1), "schema_violation", id="unknown-field"),
    pytest.param(cmd(register=...), "schema_violation", id="no-register"),
    pytest.param(cmd(register="Inventory"), "schema_violation", id="register-upper"),
    pytest.param(cmd(register="1inv"), "schema_violation", id="register-digit-first"),
    pytest.param(cmd(register="inv-x"), "schema_violation", id="register-dash"),
    pytest.param(cmd(register="inv\n"), "schema_violation", id="register-newline"),
    pytest.param(cmd(register=""), "schema_violation", id="register-empty"),
    pytest.param(cmd(register="a" * 33), "schema_violation", id="register-33"),
    pytest.param(cmd(register=5), "schema_violation", id="register-number"),
    pytest.param(cmd(recorder=""), "schema_violation", id="recorder-empty"),
    pytest.param(cmd(recorder="r" * 1025), "schema_violation", id="recorder-1025"),
    pytest.param(cmd(recorder=7001), "schema_violation", id="recorder-number"),
    pytest.param(cmd(recorder=None), "schema_violation", id="recorder-null"),
    pytest.param(cmd(id=""), "schema_violation", id="id-empty"),
    pytest.param(cmd(id="i" * 201), "schema_violation", id="id-201"),
    pytest.param(cmd(id=5), "schema_violation", id="id-number"),
    pytest.param(cmd(sent_at="2026-04-18T10:15:00"), "schema_violation", id="sent-at-naive"),
    pytest.param(cmd(sent_at="2026-04-18"), "schema_violation", id="sent-at-date"),
    pytest.param(cmd(sent_at="2026-04-18 10:15:00Z"), "schema_violation", id="sent-at-space"),
    pytest.param(cmd(sent_at="2026-02-30T10:15:00Z"), "schema_violation", id="sent-at-impossible"),
    pytest.param(cmd(sent_at=1776507300), "schema_violation", id="sent-at-number"),
    pytest.param(cmd(movements=...), "schema_violation", id="post-no-movements"),
    pytest.param(cmd(movements=[]), "schema_violation", id="post-empty-movements"),
    pytest.param(cmd(movements=None), "schema_violation", id="movements-null"),
    pytest.param(cmd(movements={"period": "2026-04-18"}), "schema_violation", id="movements-object"),
    pytest.param(
        cmd(movements=[{"period": "2026-04-18"}] * 10_001), "schema_violation", id="movements-10001"
    ),
    pytest.param(cmd(op="repost", movements=...), "schema_violation", id="repost-no-movements"),
    pytest.param(cmd(op="unpost"), "schema_violation", id="unpost-with-movements"),
    pytest.param(cmd(op="unpost", movements=[]), "schema_violation", id="unpost-empty-movements"),
    pytest.param(mv("[]"), "schema_violation", id="movement-array"),
    pytest.param(mv('"x"'), "schema_violation", id="movement-string"),
    pytest.param(mv('{"q":1}'), "schema_violation", id="movement-no-period"),
    pytest.param(mv('{"period":20260418}'), "schema_violation", id="period-number"),
    pytest.param(mv('{"period":null}'), "schema_violation", id="period-null"),
    pytest.param(mv(f'{{{PERIOD},"q":null}}'), "schema_violation", id="value-null"),
    pytest.param(mv(f'{{{PERIOD},"q":{{}}}}'), "schema_violation", id="value-object"),
    pytest.param(mv(f'{{{PERIOD},"q":[1]}}'), "schema_violation", id="value-array"),
    pytest.param(mv(f'{{{PERIOD},"recorder":"r1"}}'), "schema_violation", id="movement-recorder"),
    pytest.param(
        b'{"op":"post","op":"post","register":"inv","recorder":"r","movements":[{' + PERIOD.encode() + b"}]}",
        "schema_violation",
        id="duplicate-top",
    ),
    pytest.param(mv(f'{{{PERIOD},"q":1,"q":1}}'), "schema_violation", id="duplicate-in-movement"),
    pytest.param(mv(f'{{{PERIOD},"x":{{"a":1,"a":2}}}}'), "schema_violation", id="duplicate-deep"),
    pytest.param(mv(f'{{{PERIOD},"q":1e131072}}'), "schema_violation", id="number-too-big"),
    pytest.param(mv(f'{{{PERIOD},"q":1e-16384}}'), "schema_violation", id="number-too-small"),
    pytest.param(mv(f'{{{PERIOD},"q":0e-16384}}'), "schema_violation", id="zero-scale-too-big"),
    pytest.param(
        mv(f'{{{PERIOD},"q":1e99999999999999999999}}'), "schema_violation", id="exponent-beyond-decimal"
    ),
    pytest.param(mv(f'{{{PERIOD},"q":"a\\u0000b"}}'), "schema_violation", id="nul-in-value"),
    pytest.param(mv(f'{{{PERIOD},"q\\u0000":1}}'), "schema_violation", id="nul-in-key"),
    pytest.param(mv(f'{{{PERIOD},"q":"\\ud800"}}'), "schema_violation", id="lone-surrogate"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "schema_violation", id="nested-too-deep"),
]


@pytest.mark.parametrize(("payload", "error_class"), BAD)
def test_bad_input_is_rejected_with_its_class(payload: bytes | None, error_class: str) -> None:
    with pytest.raises(Reject) as info:
        decode(payload)
    assert info.value.error_class == error_class
    assert info.value.reason


def test_reason_names_the_location_without_echoing_values() -> None:
    with pytest.raises(Reject) as info:
        decode(mv('{"period":"2026-04-18","secret value":{"x":"SECRET"}}'))
    assert (
        info.value.reason == 'movements[0]["secret value"]: expected a string, number or boolean, got object'
    )
    with pytest.raises(Reject) as info:
        decode(cmd(recorder="", register="Bad", extra="SECRET"))
    assert "SECRET" not in info.value.reason
    assert info.value.reason.startswith("register: String should match pattern")
    assert "recorder: " in info.value.reason
    assert "extra: Extra inputs are not permitted" in info.value.reason


def test_reject_hints_name_op_and_register_only_when_well_formed() -> None:
    with pytest.raises(Reject) as info:
        decode(cmd(recorder=""))
    assert (info.value.op, info.value.register) == ("post", "inventory")
    with pytest.raises(Reject) as info:
        decode(cmd(op="delete", register="Not A Name"))
    assert (info.value.op, info.value.register) == (None, None)
    with pytest.raises(Reject) as info:
        decode(b"{")
    assert (info.value.op, info.value.register) == (None, None)


SPEC_EXAMPLE = (  # SPEC §13.1
    b'{"op":"repost","register":"inventory","recorder":"receipt:7001","movements":[{"period":"2026-04-18",'
    b'"warehouse":1,"product":42,"quantity":"100.5","amount":5000}],"id":"c0f3e2a4-4c1e-4bb0-9d5b-1f2a3b4c5d6e",'
    b'"sent_at":"2026-04-18T10:15:00Z"}'
)
UNPOST = b'{"op":"unpost","register":"inventory","recorder":"receipt:7001"}'

GOOD = [
    pytest.param(SPEC_EXAMPLE, id="spec-example"),
    pytest.param(cmd(), id="post"),
    pytest.param(UNPOST, id="unpost"),
    pytest.param(
        b'{"op":"repost","register":"inventory","recorder":"receipt:7001","movements":[]}', id="repost-empty"
    ),
    pytest.param(
        b' \n{"recorder":"\xc3\xbc\xe2\x82\xac","movements":[{"period":"2026-04-18T10:15:00+02:00","ok":true,'
        b'"q":-0.0,"big":123456789012345678901234567890.123456789,"e":1E+3,"s":"\\u00e9\\n"}],'
        b'"register":"r","op":"post"}\r\n',
        id="unicode-whitespace-numbers",
    ),
    pytest.param(cmd(register="a" * 32, recorder="r" * 1024, id="i" * 200), id="limits"),
    pytest.param(cmd(movements=[{"period": "2026-04-18", "q": 1}] * 10_000), id="10000-movements"),
    pytest.param(cmd(id=None, sent_at=None), id="null-optionals"),
    pytest.param(cmd(sent_at="2026-04-18t10:15:00.123456789-03:30"), id="sent-at-lowercase-nanos"),
    pytest.param(cmd(sent_at="2016-12-31T23:59:60Z"), id="sent-at-leap-second"),
    pytest.param(mv(f'{{{PERIOD},"q":1e131071,"t":1e-16383,"z":0e200000}}'), id="numeric-range-edges"),
    pytest.param(mv(f'{{{PERIOD},"q":"\\ud83d\\ude00"}}'), id="surrogate-pair"),
]


def _exact(payload: bytes) -> Any:
    return json.loads(payload, parse_float=Decimal, parse_int=Decimal)


@pytest.mark.parametrize("payload", GOOD)
def test_good_command_reaches_the_engine_unchanged(payload: bytes) -> None:
    command = decode(payload)
    doc = _exact(payload)
    expected = {k: doc[k] for k in ("op", "register", "recorder", "movements") if k in doc}
    engine = command.to_engine()
    assert {
        **engine,
        **({"movements": list(engine["movements"])} if "movements" in engine else {}),
    } == expected
    # the engine's text parses back to the same values, digit and exponent included
    (again,) = _exact(engine_json([command]).encode())
    assert again == expected
    for m_in, m_out in zip(expected.get("movements", []), again.get("movements", []), strict=True):
        for k, v in m_in.items():
            if isinstance(v, Decimal):
                assert m_out[k].as_tuple() == v.as_tuple()


def test_engine_json_keeps_the_written_digits() -> None:
    command = decode(mv(f'{{{PERIOD},"a":1.50,"b":1E+3,"c":-0,"d":0.000001,"e":7,"f":true,"g":"1.50"}}'))
    assert engine_json([command]) == (
        '[{"op":"post","register":"inventory","recorder":"r1","movements":[{"period":"2026-04-18",'
        '"a":1.50,"b":1E+3,"c":-0,"d":0.000001,"e":7,"f":true,"g":"1.50"}]}]'
    )
    assert engine_json([]) == "[]"


def test_decoded_fields() -> None:
    command = decode(SPEC_EXAMPLE)
    assert isinstance(command, Repost)
    assert command.register_name == "inventory"
    assert command.id == "c0f3e2a4-4c1e-4bb0-9d5b-1f2a3b4c5d6e"
    assert command.sent_at == datetime(2026, 4, 18, 10, 15, tzinfo=UTC)
    assert command.movements[0]["quantity"] == "100.5"
    assert command.movements[0]["amount"] == Decimal(5000)
    leap = decode(cmd(sent_at="2016-12-31T23:59:60+01:00"))
    assert leap.sent_at == datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=1)))
    assert isinstance(decode(UNPOST), Unpost)


def test_commands_built_in_python() -> None:
    post = Post(
        op="post",
        register="inv",
        recorder="r1",
        movements=({"period": "2026-04-18", "q": Decimal("1.50"), "n": 3, "ok": False},),
        sent_at=datetime(2026, 4, 18, tzinfo=UTC),
    )
    assert engine_json([post]) == (
        '[{"op":"post","register":"inv","recorder":"r1","movements":[{"period":"2026-04-18","q":1.50,"n":3,"ok":false}]}]'
    )
    with pytest.raises(ValidationError):
        post.recorder = "other"  # type: ignore[misc]  # frozen
    with pytest.raises(ValidationError, match="got float"):
        Post(op="post", register="inv", recorder="r1", movements=[{"period": "2026-04-18", "q": 0.1}])
    with pytest.raises(ValidationError, match="timezone"):
        Post(
            op="post",
            register="inv",
            recorder="r1",
            movements=[{"period": "p"}],
            sent_at=datetime(2026, 4, 18),
        )
    with pytest.raises(ValidationError, match="numeric range"):
        Post(op="post", register="inv", recorder="r1", movements=[{"period": "p", "q": Decimal("NaN")}])
    assert Repost(op="repost", register="inv", recorder="r1", movements=()).to_engine()["movements"] == ()


def test_movements_are_copied() -> None:
    source = {"period": "2026-04-18", "q": 1}
    post = Post(op="post", register="inv", recorder="r1", movements=[source])
    source["q"] = 2
    assert post.movements[0]["q"] == 1


# --- fingerprint (SPEC §13.2) -------------------------------------------------------------------------------


CANONICAL_NUMBERS = [
    ("1E+3", "1000"),
    ("1e3", "1000"),
    ("1.500", "1.5"),
    ("1.0", "1"),
    ("100", "100"),
    ("-0", "0"),
    ("-0.0", "0"),
    ("0E+5", "0"),
    ("0.000", "0"),
    ("0.000001", "0.000001"),
    ("1E-7", "0.0000001"),
    ("-1.23E-7", "-0.000000123"),
    ("12.3400E2", "1234"),
    ("12.345E1", "123.45"),
    ("1.23E+30", "1230000000000000000000000000000"),
    ("-5E+2", "-500"),
    ("123456789012345678901234567890.1234567890", "123456789012345678901234567890.123456789"),
    ("1E+40", "1" + "0" * 40),
    ("1E-40", "0." + "0" * 39 + "1"),
]


@pytest.mark.parametrize(("written", "canonical"), CANONICAL_NUMBERS)
def test_canonical_number(written: str, canonical: str) -> None:
    assert canonical_json([Decimal(written)]) == f"[{canonical}]"


def test_canonical_json_shape() -> None:
    value = {"b": [True, False, None, 5, 'é"\n'], "a": {"z": Decimal("2.50"), "y": "x"}}
    assert canonical_json(value) == '{"a":{"y":"x","z":2.5},"b":[true,false,null,5,"é\\"\\n"]}'
    with pytest.raises(TypeError):
        canonical_json(1.5)


def test_fingerprint_ignores_id_sent_at_key_order_and_number_spelling() -> None:
    base = fingerprint(decode(mv(f'{{{PERIOD},"q":1.5,"w":1000}}')))
    same = [
        mv(f'{{"w":1E+3,"q":1.50,{PERIOD}}}'),
        mv(f'{{{PERIOD},"q":15e-1,"w":1000.000}}'),
        b'{"id":"x","sent_at":"2026-04-18T10:15:00Z","movements":[{"q":1.5,'
        + PERIOD.encode()
        + b',"w":1000}],"recorder":"r1","register":"inventory","op":"post"}',
    ]
    assert [fingerprint(decode(p)) for p in same] == [base] * len(same)
    different = [
        mv(f'{{{PERIOD},"q":1.51,"w":1000}}'),
        mv(f'{{{PERIOD},"q":"1.5","w":1000}}'),  # a string is not a number
        mv('{"period":"2026-04-19","q":1.5,"w":1000}'),
        mv(f'{{{PERIOD},"q":1.5,"w":1000}},{{{PERIOD},"q":0}}'),
        b'{"op":"repost","register":"inventory","recorder":"r1","movements":[{'
        + PERIOD.encode()
        + b',"q":1.5,"w":1000}]}',
        b'{"op":"post","register":"inventory","recorder":"r2","movements":[{'
        + PERIOD.encode()
        + b',"q":1.5,"w":1000}]}',
    ]
    prints = [fingerprint(decode(p)) for p in different]
    assert base not in prints
    assert len(set(prints)) == len(prints)


def test_fingerprint_is_pinned() -> None:
    """A change here changes every stored fingerprint: a reused id would then be id_reused (SPEC §13.2)."""
    command = decode(
        b'{"op":"post","register":"inventory","recorder":"receipt:7001",'
        b'"movements":[{"period":"2026-04-18","quantity":1.50,"amount":5E+3,"name":"\xc3\xa9"}]}'
    )
    assert canonical_json(command.to_engine()) == (
        '{"movements":[{"amount":5000,"name":"é","period":"2026-04-18","quantity":1.5}],'
        '"op":"post","recorder":"receipt:7001","register":"inventory"}'
    )
    assert fingerprint(command) == "45f98825c64cdbfd8d7716818988b320"


# --- properties ---------------------------------------------------------------------------------------------


@st.composite
def spelled_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """The same value written two ways: (text, respelled text)."""
    digits = draw(st.integers(min_value=0, max_value=10**30))
    negative = draw(st.booleans())
    exponent = draw(st.integers(min_value=-40, max_value=40))
    pad = draw(st.integers(min_value=0, max_value=5))
    sign = "-" if negative else ""
    text = f"{sign}{digits}E{exponent}"
    # respelled: pad the digits with zeros and lower the exponent to match
    respelled = f"{sign}{digits}{'0' * pad}e{exponent - pad:+d}"
    return text, respelled


@given(spelled_numbers())
def test_canonical_number_is_plain_and_exact(pair: tuple[str, str]) -> None:
    text, respelled = pair
    canonical = canonical_json(Decimal(text))
    assert canonical == canonical_json(Decimal(respelled))
    assert Decimal(canonical) == Decimal(text)
    assert "E" not in canonical
    assert "e" not in canonical
    assert not ("." in canonical and canonical.endswith("0"))
    assert not canonical.endswith(".")
    assert canonical != "-0"


def outcome(data: bytes) -> str:
    """ "ok" or the reject class; any other exception fails the test."""
    try:
        decode(data)
    except Reject as r:
        return r.error_class
    return "ok"


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_decode_raises_only_reject(data: bytes) -> None:
    assert outcome(data) in {"ok", "invalid_json", "schema_violation"}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: Decimal(str(d))),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@given(
    op=st.sampled_from(["post", "unpost", "repost", "other"]),
    register=st.sampled_from(["inventory", "Bad"]),
    recorder=st.text(max_size=3),
    movements=st.lists(
        st.dictionaries(st.sampled_from(["period", "q", "recorder", "w"]), json_values), max_size=3
    ),
    extra=st.dictionaries(st.sampled_from(["id", "sent_at", "x"]), json_values, max_size=2),
)
def test_decode_structured_documents(
    op: str, register: str, recorder: str, movements: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    doc = {"op": op, "register": register, "recorder": recorder, "movements": movements, **extra}
    payload = canonical_json(doc).encode()
    if outcome(payload) != "ok":
        assert outcome(payload) == "schema_violation"
        return
    command = decode(payload)
    assert command.op == op
    assert _exact(engine_json([command]).encode())[0]["recorder"] == recorder


# --- JSON Schema --------------------------------------------------------------------------------------------


def test_checked_in_schema_matches_the_models() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "consumer/schema/command.schema.json is stale: run `python -m consumer.commands --schema` and commit"
    )


def test_schema_shape() -> None:
    schema = json.loads(schema_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]} == {"Post", "Unpost", "Repost"}
    post = schema["$defs"]["Post"]
    assert post["additionalProperties"] is False
    assert set(post["required"]) == {"op", "register", "recorder", "movements"}
    assert post["properties"]["register"]["pattern"] == "^[a-z][a-z0-9_]*$"
    assert post["properties"]["movements"]["minItems"] == 1
    assert schema["$defs"]["Repost"]["properties"]["movements"]["minItems"] == 0
    assert "movements" not in schema["$defs"]["Unpost"]["properties"]


def test_schema_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out" / "command.schema.json"
    assert main(["--schema", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == schema_text()
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
