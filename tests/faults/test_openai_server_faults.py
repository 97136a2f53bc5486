"""An OpenAI-compatible server that misbehaves: every fault is retried within ``max_retries`` and
then ends in one line naming the server and the cause, never a traceback.

The server is the scripted one of tests/test_openai_engine.py on 127.0.0.1 (see
tests/faults/openai_server.py); each test bounds its requests by ``max_retries`` and its time by
``timeout_s`` and a small backoff.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from charter.errors import InputError
from charter.generators import openai_engine
from charter.generators.openai_engine import MAX_BACKOFF_S
from tests.cli import charter, one_error_line
from tests.faults.openai_server import FaultScript, openai_run_args, serve
from tests.test_openai_engine import SAMPLING, engine_for, user

CAUSES = {  # a reset may reach the client as either exception, both ConnectionResetErrors
    "incomplete": r"IncompleteRead: the server closed the connection mid-body",
    "reset": r"(ConnectionResetError|RemoteDisconnected)",
    "malformed": r"malformed JSON body",
}


QUICK = ("call_cache=false", "report=false")


@pytest.fixture
def script() -> FaultScript:
    return FaultScript()


@pytest.fixture
def base_url(script: FaultScript) -> Iterator[str]:
    yield from serve(script)


@pytest.mark.parametrize("fault", ["incomplete", "reset", "malformed"])
def test_a_dropped_or_garbled_answer_is_retried_and_no_row_is_lost(script, base_url, fault):
    script.faults = [fault, fault]  # two requests of the batch fail once each
    chats = [user(f"q{i}") for i in range(6)]
    out = engine_for(base_url, max_concurrency=2).generate(chats, SAMPLING)
    assert [o[0].text.split(" #")[0] for o in out] == [f"q{i}" for i in range(6)]
    # both faults were met and retried (a loaded machine may time out and retry one more)
    assert not script.faults and len(script.seen) >= 6 + 2 and script.answered >= 6


@pytest.mark.parametrize("fault", ["incomplete", "reset", "malformed"])
def test_when_retries_run_out_it_is_one_line_naming_server_and_cause(script, base_url, fault):
    script.faults = [fault] * 10
    start = time.monotonic()
    with pytest.raises(InputError) as failure:
        engine_for(base_url, max_retries=2).generate([user("hi")], SAMPLING)
    message = str(failure.value)
    url = re.escape(f"POST {base_url}/chat/completions")
    assert re.search(f"{url} failed 3 times; last: {CAUSES[fault]}", message), message
    assert "\n" not in message
    assert len(script.seen) == 3 and time.monotonic() - start < 30


def test_an_answer_without_choices_is_one_line_at_once(script, base_url):
    script.faults = ["no_choices"]
    with pytest.raises(InputError, match="the answer has no choices") as failure:
        engine_for(base_url).generate([user("hi")], SAMPLING)
    assert base_url in str(failure.value) and len(script.seen) == 1


def test_500_and_503_are_retried(script, base_url):
    script.statuses = [500, 503]
    out = engine_for(base_url).generate([user("hello")], SAMPLING)
    assert out[0][0].text.startswith("hello") and len(script.seen) == 3


def test_retry_after_is_honoured(script, base_url):
    script.faults = [("retry_after", "1", 429)]
    start = time.monotonic()
    out = engine_for(base_url, backoff_s=0.01).generate([user("later")], SAMPLING)
    assert out[0][0].text.startswith("later") and len(script.seen) == 2
    assert time.monotonic() - start >= 0.95  # the server's second, not the 10 ms backoff


def test_a_huge_retry_after_is_capped(script, base_url, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(openai_engine, "time", SimpleNamespace(sleep=slept.append))
    script.faults = [("retry_after", "3600", 503)]
    engine_for(base_url).generate([user("later")], SAMPLING)
    assert slept == [MAX_BACKOFF_S]


def test_a_response_slower_than_the_timeout_ends_in_one_line(script, base_url):
    # the headers come, the body never does (a stalled stream), on every attempt
    script.faults = ["stall_body"] * 5
    start = time.monotonic()
    with pytest.raises(InputError, match="failed 2 times; last: TimeoutError") as failure:
        engine_for(base_url, timeout_s=0.5, max_retries=1).generate([user("slow")], SAMPLING)
    assert base_url in str(failure.value) and len(script.seen) == 2
    assert time.monotonic() - start < 30


def test_headers_slower_than_the_timeout_end_in_one_line(script, base_url):
    script.delay_s = 3.0  # every answer is late
    script.stall_s = 3.0
    start = time.monotonic()
    with pytest.raises(InputError, match="failed 2 times; last: .*timed out"):
        engine_for(base_url, timeout_s=0.5, max_retries=1).generate([user("slow")], SAMPLING)
    assert len(script.seen) == 2 and time.monotonic() - start < 30


def test_missing_logprobs_are_one_line_not_a_silent_tie(script, base_url):
    script.top_logprobs = [("A", -0.5), ("B", -1.0)]
    script.faults = ["no_logprobs"]
    engine = engine_for(base_url)
    with pytest.raises(InputError, match="no top log-probs") as failure:
        engine.choice_logprobs([user("A or B?")], ["A", "B"])
    assert base_url in str(failure.value) and "\n" not in str(failure.value)
    assert len(script.seen) == 1  # not retried: the server will not start sending them
    assert engine.floored_scores == 0
    # an empty list is an answer (every choice unlisted): floored and counted, as before
    script.top_logprobs = []
    scores = engine.choice_logprobs([user("A or B?")], ["A", "B"])[0]
    assert scores["A"] == scores["B"] and engine.floored_scores == 2


def test_a_run_whose_server_keeps_dropping_ends_in_one_line(script, base_url, tmp_path):
    script.faults = ["incomplete"] * 50
    result = charter(*openai_run_args(base_url, tmp_path, *QUICK), cwd=tmp_path, timeout=300)
    line = one_error_line(result)
    assert "IncompleteRead" in line and base_url in line
    assert not (tmp_path / "run" / "candidates.jsonl").exists()  # nothing half-written


def test_a_run_through_dropped_answers_completes(script, base_url, tmp_path):
    script.top_logprobs = [("A", -0.4), ("B", -1.2)]
    script.faults = ["incomplete", "reset", "malformed"]
    result = charter(*openai_run_args(base_url, tmp_path, *QUICK), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()
    assert len(rows) == 3  # every prompt, once
