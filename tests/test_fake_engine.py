"""The fake engine's fast scoring path gives the scores of its definition, bit for bit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from charter.generators import fake_engine
from charter.generators.fake_engine import FakeEngine, hash_score

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
messages = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": texts}
    ),
    # a key of its own, a value that is not a string: the general encoder's path
    st.dictionaries(texts, st.one_of(texts, st.integers(), st.floats(allow_nan=False)), max_size=3),
)
chats = st.lists(messages, max_size=3)


@settings(max_examples=200, deadline=None)
@given(chat=chats, choices=st.lists(texts, min_size=1, max_size=3, unique=True))
def test_the_one_encoding_path_scores_as_hash_score_does(chat, choices):
    tails = fake_engine._choice_tails(choices)
    assert fake_engine._hash_scores(chat, tails) == [hash_score(chat, c) for c in choices]


def test_a_swapped_default_score_is_obeyed(monkeypatch):
    """Tests that replace the module's ``hash_score`` (to give the judge an opinion) still get
    their score, not the fast path's."""
    monkeypatch.setattr(fake_engine, "hash_score", lambda chat, choice: 5.0 if choice == "A" else 0)
    scores = FakeEngine().choice_logprobs([[{"role": "user", "content": "hi"}]], ["A", "B"])
    assert scores[0]["A"] > -0.01 and scores[0]["B"] < -4.9
