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
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import jinja2
from jinja2 import nodes

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
    """Render the user turn that asks the judge to compare two responses.

    A prompt's K candidates make K(K-1) chats that differ only in the two responses, so the
    template is rendered once per (conversation, principle) with placeholders and the responses
    are put in with string joins (:func:`_pairwise_pieces`); a template where that could differ
    from a full render is rendered in full every time.
    """
    pieces = _pairwise_pieces(
        template,
        tuple((m["role"], m["content"]) for m in messages),
        principle,
        use_examples,
    )
    if pieces is not None:
        before, middle, after = pieces
        return f"{before}{neutralise(response_a)}{middle}{neutralise(response_b)}{after}"
    return _render_pairwise_in_full(
        template, messages, principle, response_a, response_b, use_examples
    )


class PairwiseRenders:
    """:func:`render_pairwise` for the chats of one judge call, to the same text, cheaper.

    A prompt's K(K-1) chats share their conversation and principle, and each response is in
    2(K-1) of them: the pieces are looked up once per run of chats about the same conversation
    and principle (the same objects), and each response is neutralised once per call. Made per
    call: it keeps every response it has seen.
    """

    def __init__(self, template: Template, *, use_examples: bool = False) -> None:
        self.template = template
        self.use_examples = use_examples
        self._last: tuple[Any, Principle, tuple[str, str, str] | None] | None = None
        self._neutral: dict[str, str] = {}

    def __call__(
        self, messages: Chat, principle: Principle, response_a: str, response_b: str
    ) -> str:
        last = self._last
        if last is None or last[0] is not messages or last[1] is not principle:
            pairs = tuple((m["role"], m["content"]) for m in messages)
            pieces = _pairwise_pieces(self.template, pairs, principle, self.use_examples)
            self._last = last = (messages, principle, pieces)
        if last[2] is None:
            return _render_pairwise_in_full(
                self.template, messages, principle, response_a, response_b, self.use_examples
            )
        before, middle, after = last[2]
        return (
            f"{before}{self._neutralised(response_a)}{middle}{self._neutralised(response_b)}{after}"
        )

    def _neutralised(self, text: str) -> str:
        done = self._neutral.get(text)
        if done is None:
            done = self._neutral[text] = neutralise(text)
        return done


def _render_pairwise_in_full(
    template: Template,
    messages: Chat | tuple[tuple[str, str], ...],
    principle: Principle,
    response_a: str,
    response_b: str,
    use_examples: bool,
) -> str:
    pairs = [(m["role"], m["content"]) if isinstance(m, dict) else m for m in messages]
    return template.render(
        messages=[{"role": role, "content": neutralise(text)} for role, text in pairs],
        principle=principle,
        response_a=neutralise(response_a),
        response_b=neutralise(response_b),
        examples=[_neutral_example(e) for e in principle.examples] if use_examples else [],
    )


_SLOT_A, _SLOT_B = "\x00charter:response_a\x00", "\x00charter:response_b\x00"
_MESSAGE_SLOT = "\x00charter:message_{}\x00"


def _pairwise_pieces(
    template: Template,
    messages: tuple[tuple[str, str], ...],
    principle: Principle,
    use_examples: bool,
) -> tuple[str, str, str] | None:
    """The template rendered around the two responses: ``(before, between, after)``, or None
    when a join could differ from a full render.

    Most often the conversation's texts are joined into the frame of its roles
    (:func:`_pairwise_frame`), which is rendered once per principle, not once per prompt (a
    render is ~15 us, a prompt's chats ~20 us in all); else the template is rendered for this
    conversation (:func:`_pieces_rendered`).
    """
    frame = _pairwise_frame(template, tuple(role for role, _ in messages), principle, use_examples)
    if frame is None or not all(type(text) is str for _, text in messages):
        return _pieces_rendered(template, messages, principle, use_examples)
    around, middle, after = frame
    parts = [around[0]]
    for (_, text), piece in zip(messages, around[1:], strict=True):
        parts += (neutralise(text), piece)
    return "".join(parts), middle, after


@lru_cache(maxsize=256)
def _pairwise_frame(
    template: Template, roles: tuple[str, ...], principle: Principle, use_examples: bool
) -> tuple[tuple[str, ...], str, str] | None:
    """The template rendered around every message's text and the two responses: the text
    before each message and before response A, then between the responses, then after; None
    where a join could differ from a full render (see :func:`_prints_contents_verbatim`, and
    :func:`_pieces_rendered` for the responses), or a placeholder is not there exactly once,
    in order."""
    if not (_prints_responses_verbatim(template) and _prints_contents_verbatim(template)):
        return None
    slots = [_MESSAGE_SLOT.format(i) for i in range(len(roles))]
    conversation = tuple(zip(roles, slots, strict=True))
    text = _render_pairwise_in_full(
        template, conversation, principle, _SLOT_A, _SLOT_B, use_examples
    )
    pieces = _cut(text, (*slots, _SLOT_A, _SLOT_B))
    if pieces is None:
        return None
    return tuple(pieces[:-2]), pieces[-2], pieces[-1]


def _cut(text: str, slots: tuple[str, ...]) -> list[str] | None:
    """``text`` cut at each placeholder in ``slots``: the ``len(slots) + 1`` pieces around
    them, or None where a placeholder is not there exactly once, in order, or the first or
    last piece is blank (the render's strip would have reached into what fills the slot
    next to it)."""
    pieces, rest = [], text
    for slot in slots:
        if text.count(slot) != 1:
            return None
        head, found, rest = rest.partition(slot)
        if not found:  # out of order
            return None
        pieces.append(head)
    if not pieces[0].strip() or not rest.strip():
        return None
    return [*pieces, rest]


@lru_cache(maxsize=256)
def _pieces_rendered(
    template: Template,
    messages: tuple[tuple[str, str], ...],
    principle: Principle,
    use_examples: bool,
) -> tuple[str, str, str] | None:
    """:func:`_pairwise_pieces` rendered for one conversation: None when the template does more
    than print each response once as it is (a filter, a test, a second use), the responses
    would come first or last (where the render's strip would touch them) or B before A, or the
    placeholder text occurs in the inputs."""
    if not _prints_responses_verbatim(template):
        return None
    texts = [text for _, text in messages]
    if any("\x00charter:" in t for t in texts):
        return None
    text = _render_pairwise_in_full(template, messages, principle, _SLOT_A, _SLOT_B, use_examples)
    pieces = _cut(text, (_SLOT_A, _SLOT_B))
    return None if pieces is None else (pieces[0], pieces[1], pieces[2])


def _prints_values_as_they_are(env: jinja2.Environment) -> bool:
    """No autoescaping and no ``finalize``: a value is printed as its text."""
    return not env.autoescape and env.finalize is None


@cache
def _prints_responses_verbatim(template: Template) -> bool:
    """Whether ``response_a`` and ``response_b`` each appear once in the template's source,
    printed bare (``{{ response_a }}``) outside any loop or condition."""
    env = template.jinja.environment
    tree = env.parse(template.source)
    uses = [n.name for n in tree.find_all(nodes.Name) if n.name in ("response_a", "response_b")]
    bare = [
        child.name
        for output in tree.body
        if isinstance(output, nodes.Output)
        for child in output.nodes
        if isinstance(child, nodes.Name)
    ]
    return (
        _prints_values_as_they_are(env)
        and sorted(uses) == ["response_a", "response_b"]
        and sorted(n for n in bare if n in ("response_a", "response_b"))
        == ["response_a", "response_b"]
    )


@cache
def _prints_contents_verbatim(template: Template) -> bool:
    """Whether the messages are read in one ``{% for m in messages %}`` loop only, whose ``m``
    is read only as ``m.role`` and ``m.content``, and ``m.content`` only printed bare
    (``{{ m.content }}``): then a message's text changes nothing in the render but its own
    place, and the frame of its roles holds for any texts. A filter on it, a test or an ``if``
    on it, or a print of ``m`` itself makes this False."""
    env = template.jinja.environment
    tree = env.parse(template.source)
    reads = sum(n.name == "messages" for n in tree.find_all(nodes.Name))
    loops = [
        n
        for n in tree.find_all(nodes.For)
        if isinstance(n.iter, nodes.Name) and n.iter.name == "messages"
    ]
    if reads != 1 or len(loops) != 1 or not isinstance(loops[0].target, nodes.Name):
        return False
    loop, var = loops[0], loops[0].target.name
    names = [n for n in loop.find_all(nodes.Name) if n.name == var and n is not loop.target]
    attrs = [
        n
        for n in loop.find_all(nodes.Getattr)
        if isinstance(n.node, nodes.Name) and n.node.name == var
    ]
    printed = {id(child) for output in loop.find_all(nodes.Output) for child in output.nodes}
    return (
        _prints_values_as_they_are(env)
        and all(n.ctx == "load" for n in names)
        and len(names) == len(attrs)
        and all(n.attr in ("role", "content") for n in attrs)
        and all(id(n) in printed for n in attrs if n.attr == "content")
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
