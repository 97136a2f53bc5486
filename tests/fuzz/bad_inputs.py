"""Hypothesis strategies for the input users get wrong: odd text, wrong types, damaged bytes.

Shared by the fuzz tests of every loader. Each strategy draws mostly plausible input with one
or two things wrong, since a file that is all junk only exercises the first check.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

NASTY_STRINGS = (
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "\x07\x1b[31mred\x1b[0m",
    "\ufeffbom",
    "\u202eevil\u202c",  # right-to-left override
    "zero\u200bwidth",
    "line\u2028sep\u2029para\x85nel",
    "e\u0301\u0301\u0301",  # stacked combining marks
    "\U0001f600\U0001f9d1\u200d\U0001f52c",
    "\uffff\ufffe",
    "null",
    "None",
    "NaN",
    "1e999",
    "'; DROP TABLE prompts; --",
    "${oc.env:HOME}",
    "{{ 7 * 7 }}",
    "[bold red]markup[/]",
    "</response_A>",
    "x" * 5000,
)

nasty_text = st.one_of(
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
)
"""Text a user's file can hold: control characters, bidi marks, markup, template syntax."""

nonblank_text = nasty_text.map(lambda t: t if t.strip() else f"{t}x")

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)

json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(nasty_text, inner, max_size=3)
    ),
    max_leaves=8,
)
"""Any JSON value, NaN and Infinity included (Python writes and reads them)."""

ROLES = st.sampled_from(["system", "user", "assistant", "User", "bot", "", None, 3])


@st.composite
def chats(draw: st.DrawFn, good: bool) -> list[dict[str, str]]:
    """A chat: well-formed (alternating turns ending with a non-blank user turn) or broken."""
    if good:
        turns = draw(st.integers(min_value=0, max_value=2))
        chat = []
        for _ in range(turns):
            chat += [
                {"role": "user", "content": draw(nasty_text)},
                {"role": "assistant", "content": draw(nasty_text)},
            ]
        return [*chat, {"role": "user", "content": draw(nonblank_text)}]
    return draw(
        st.one_of(
            st.just([]),
            st.lists(
                st.fixed_dictionaries(
                    {"role": ROLES, "content": st.one_of(nasty_text, json_values)}
                ),
                max_size=3,
            ),
            st.lists(json_values, min_size=1, max_size=3),
            json_scalars,
            st.builds(lambda c: [{"role": "assistant", "content": c}], nasty_text),
            st.builds(lambda c: [{"role": "user", "content": c}], st.sampled_from(["", " \n"])),
        )
    )


BROKEN_LINES = (
    b"{",
    b'{"prompt": "unterminated',
    b"[1, 2, 3]",
    b'"just a string"',
    b"null",
    b"42",
    b"\xff\xfe\x00b\x00r\x00o\x00k\x00e\x00n",
    b'{"prompt": "\xc3\x28 invalid utf-8"}',
    b'{"prompt": "a\x00b"}',
    b'{"prompt": "\\ud800 lone surrogate"}',
    b'{"prompt": "\\udfff", "id": "\\ud83d"}',
    b'{"prompt": "ok", "id": 1' + b"0" * 5000 + b"}",
    b'{"prompt": "ok", "id": 1e99999}',
    b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"prompt": NaN, "id": Infinity}',
    b'{"prompt": "dup", "prompt": 5}',
    b"\x1a\x04",
    b'{"prompt": "x"}{"prompt": "y"}',
    b'\xef\xbb\xbf{"prompt": "bom in the middle"}',
)
"""Single lines no JSON Lines reader should take for a row, each wrong in its own way."""


def json_line(row: object) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte-level faults: a cut, junk or a NUL spliced in, CRLF, a BOM."""
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        fault = draw(st.sampled_from(["cut", "splice", "crlf", "bom", "flip"]))
        at = draw(st.integers(min_value=0, max_value=len(data)))
        if fault == "cut":
            data = data[:at]
        elif fault == "splice":
            junk = draw(st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from(BROKEN_LINES)))
            data = data[:at] + junk + data[at:]
        elif fault == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif fault == "bom":
            data = b"\xef\xbb\xbf" + data
        elif data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data
