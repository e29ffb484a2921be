"""docs/protocol.md is the spec for other clients: its examples must be true."""

import re
from pathlib import Path

import pytest

from hub.protocol import JSON, MSGPACK, TAGS, EndCode, ErrorCode

SPEC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
EXAMPLES = re.findall(r"^JSON +(.+)\nmsgpack +(.+)$", SPEC, flags=re.MULTILINE)
SESSION = re.findall(r"^[<>] (\[.*\])$", SPEC, flags=re.MULTILINE)


def test_the_spec_has_examples() -> None:
    assert len(EXAMPLES) >= len(TAGS)
    assert len(SESSION) >= 5


@pytest.mark.parametrize(("json_text", "msgpack_hex"), EXAMPLES)
def test_each_example_is_what_the_codecs_write(json_text: str, msgpack_hex: str) -> None:
    frames = JSON.decode_strict(json_text)
    packed = bytes.fromhex(msgpack_hex)
    assert MSGPACK.decode_strict(packed) == frames
    if json_text.startswith("[["):
        assert JSON.encode_batch(frames) == json_text
        assert MSGPACK.encode_batch(frames) == packed
    else:
        assert [JSON.encode(frame) for frame in frames] == [json_text]
        assert [MSGPACK.encode(frame) for frame in frames] == [packed]


@pytest.mark.parametrize("line", SESSION)
def test_the_example_session_is_valid(line: str) -> None:
    assert len(JSON.decode_strict(line)) == 1


def test_the_tag_table_matches_the_codec() -> None:
    table = dict(re.findall(r"^\| (\d+) +\| `(\w+)` +\|", SPEC, flags=re.MULTILINE))
    assert {int(tag): name for tag, name in table.items()} == {
        tag: kind.__name__ for kind, tag in TAGS.items()
    }


@pytest.mark.parametrize("code", [*ErrorCode, *EndCode])
def test_every_code_is_documented(code: str) -> None:
    assert re.search(rf"^\| `{code}` +\|", SPEC, flags=re.MULTILINE), code
