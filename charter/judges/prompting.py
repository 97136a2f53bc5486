"""Render judge prompts from the Jinja2 templates shipped in ``charter/judges/templates``.

Templates are data: versioned files whose hash goes into provenance. Responses are put inside
``<response_A>``/``<response_B>`` (or ``<reply>``) tags; any copy of our delimiters inside a
response (or the conversation) is neutralised first, so a response cannot close its own tag and
pose as the judge's instructions. Copies a model would still read as a tag count too: any case,
spaces, attributes, full-width letters and brackets, zero-width or bidi characters inside.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

import jinja2

from charter.constitution import FewShotExample, Principle
from charter.records import Chat

_DELIMITER = re.compile(
    r"<\s*(/?)\s*(response_[ab]|conversation|reply)(?![a-z0-9_])[^<>]*>", re.IGNORECASE
)
"""A tag of the templates, in the folded text (see :func:`_folded`)."""

_BRACKETS = frozenset("<\uff1c\ufe64")  # '<' and the characters NFKC folds to it


@dataclass(frozen=True)
class Template:
    """A loaded judge template and the sha256 of its source (for provenance)."""

    name: str
    source: str
    sha256: str
    jinja: jinja2.Template

    def render(self, **values: object) -> str:
        return self.jinja.render(**values).strip()


@cache
def load_template(name: str) -> Template:
    """Load ``charter/judges/templates/{name}.jinja2``."""
    path = resources.files("charter.judges") / "templates" / f"{name}.jinja2"
    source = path.read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    return Template(
        name=name,
        source=source,
        sha256=hashlib.sha256(source.encode()).hexdigest(),
        jinja=env.from_string(source),
    )


def _folded(text: str) -> tuple[str, list[int]]:
    """``text`` as a reader sees it (NFKC, so full-width ``＜ｒｅｐｌｙ＞`` is ``<reply>``; format
    characters such as zero-width spaces and bidi marks dropped), and for each folded
    character the index of the original one it came from."""
    folded: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        if unicodedata.category(char) == "Cf":
            continue
        for part in unicodedata.normalize("NFKC", char):
            folded.append(part)
            origin.append(index)
    return "".join(folded), origin


def neutralise(text: str) -> str:
    """Break any copy of the judge's delimiters inside untrusted text.

    ``</response_A>`` (or ``< /RESPONSE_a x>``, ``＜/response_A＞``, ``</resp\u200bonse_A>``)
    becomes ``[/response_A]``, text the template never uses, which keeps it readable while
    removing its power to end the tag early. Text with no ``<`` (or look-alike) is returned as
    it is, without folding.
    """
    if _BRACKETS.isdisjoint(text):
        return text
    folded, origin = _folded(text)
    out, last = [], 0
    for match in _DELIMITER.finditer(folded):
        start, end = origin[match.start()], origin[match.end() - 1] + 1
        out += [text[last:start], f"[{match.group(1)}{match.group(2)}]"]
        last = end
    return "".join([*out, text[last:]])


def render_pairwise(
    template: Template,
    messages: Chat,
    principle: Principle,
    response_a: str,
    response_b: str,
    *,
    use_examples: bool = False,
) -> str:
    """Render the user turn that asks the judge to compare two responses."""
    safe_messages = [{"role": m["role"], "content": neutralise(m["content"])} for m in messages]
    return template.render(
        messages=safe_messages,
        principle=principle,
        response_a=neutralise(response_a),
        response_b=neutralise(response_b),
        examples=[_neutral_example(e) for e in principle.examples] if use_examples else [],
    )


def _neutral_example(example: FewShotExample) -> FewShotExample:
    """An example's texts with the response tags neutralised, like the real responses'."""
    return replace(
        example,
        prompt=neutralise(example.prompt),
        response_a=neutralise(example.response_a),
        response_b=neutralise(example.response_b),
        explanation=neutralise(example.explanation) if example.explanation else None,
    )
