"""OpenAIEngine against real HTTP servers on loopback.

Fast tests run a small OpenAI-shaped server written here (``http.server``): it fails on cue, so
retries, backoff, timeouts, concurrency and the handling of the API key are tested over real
sockets in the main venv. The slow tests start a real ``vllm serve`` on 127.0.0.1 and check what
only a real model shows: seeds, prefills, and choice scores that agree with the transformers
engine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.generators.openai_engine import OpenAIEngine

SECRET = "sk-test-0123456789-do-not-log"
SAMPLING = SamplingSettings(max_new_tokens=16, temperature=0.8, top_p=0.95, seed=3)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- a small OpenAI-shaped server that misbehaves on cue --------------------------------------


@dataclass
class Script:
    """What the server does: fail with ``statuses`` first, stall the first call until ``release``
    is set (at most ``stall_s``), wait ``delay_s`` on every other call."""

    statuses: list[int] = field(default_factory=list)
    stall_s: float = 0.0
    delay_s: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)
    top_logprobs: list[tuple[str, float]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _reply(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(200, {"data": [{"id": "tiny", "max_model_len": 512}]})

    def do_POST(self) -> None:
        script = self.server.script
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with script.lock:
            first = not script.seen
            script.seen.append({"auth": self.headers.get("Authorization"), "body": body})
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
            status = script.statuses.pop(0) if script.statuses else 200
        try:
            if first:
                script.release.wait(script.stall_s)
            else:
                time.sleep(script.delay_s)
            if status != 200:
                headers = {"Retry-After": "0"} if status == 429 else {}
                payload = {"error": {"message": f"scripted {status}"}}
            else:
                payload, headers = self._completion(body), {}
        finally:
            # out of flight once the answer is ready: counting until after the write would let
            # the client's next request, sent as soon as it reads this one, overlap it here
            with script.lock:
                script.in_flight -= 1
        self._reply(status, payload, headers)

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        last = body["messages"][-1]["content"]
        top = [{"token": t, "logprob": lp} for t, lp in self.server.script.top_logprobs]
        return {
            "choices": [
                {
                    "index": k,
                    "message": {
                        "role": "assistant",
                        "content": f" {last} #{k} {body.get('seed')} ",
                    },
                    "finish_reason": "length" if k else "stop",
                    "logprobs": {"content": [{"token": "x", "logprob": 0.0, "top_logprobs": top}]},
                }
                for k in range(body.get("n", 1))
            ],
            "usage": {"completion_tokens": 5 * body.get("n", 1)},
        }


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script = script

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is the point of one test


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def base_url(script: Script) -> Iterator[str]:
    server = ScriptedServer(script)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        script.release.set()  # a stalled handler thread ends with the test
        server.shutdown()
        server.server_close()


def engine_for(base_url: str, **kwargs: Any) -> OpenAIEngine:
    kwargs = {"max_retries": 3, "backoff_s": 0.01, "timeout_s": 5.0, **kwargs}
    return OpenAIEngine("tiny", base_url=base_url, **kwargs)


class InFlight:
    """Counts an engine's requests in flight where the engine bounds them: in ``_post``, which
    each worker of its pool runs while it holds one of the ``max_concurrency`` slots.

    Each request first waits (at most ``patience_s``) until ``width`` are in flight together, so
    an engine that runs ``width`` at once shows it on every run however loaded the machine is,
    and one that cannot shows a smaller maximum (after one wait). Send a multiple of ``width``
    requests, or the last few wait ``patience_s`` for partners that never come.
    """

    def __init__(self, engine: OpenAIEngine, width: int, patience_s: float = 30.0) -> None:
        self._post = engine._post
        self._together = threading.Barrier(width, timeout=patience_s)
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0
        engine._post = self  # type: ignore[method-assign]

    def __call__(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        try:
            # broken: fewer than `width` ever got here at once, which `most` tells the test
            with contextlib.suppress(threading.BrokenBarrierError):
                self._together.wait()
            return self._post(path, body)
        finally:
            with self._lock:
                self._now -= 1


def test_429_and_503_are_retried_until_the_answer_comes(script, base_url):
    script.statuses = [429, 503]
    engine = engine_for(base_url)
    out = engine.generate([user("hello")], SAMPLING, n=2)
    assert len(script.seen) == 3
    assert [c.text.split(" #")[0] for c in out[0]] == ["hello", "hello"]
    assert [c.finish_reason for c in out[0]] == ["stop", "length"]
    assert engine.context_length == 512  # read from the server's model list


def test_a_timeout_is_retried(script, base_url):
    # the first request stalls past the test (an engine without a timeout fails after 60 s);
    # the retries answer at once, but a loaded machine may let one time out too, hence >= 2
    script.stall_s = 60.0
    out = engine_for(base_url, timeout_s=1.0).generate([user("slow")], SAMPLING)
    assert out[0][0].text.startswith("slow") and len(script.seen) >= 2
    assert all(s["body"] == script.seen[0]["body"] for s in script.seen)  # the same request


def test_a_client_error_fails_at_once_with_the_servers_message(script, base_url):
    script.statuses = [400]
    with pytest.raises(InputError, match="HTTP 400.*scripted 400"):
        engine_for(base_url).generate([user("bad")], SAMPLING)
    assert len(script.seen) == 1


def test_the_key_is_sent_as_a_header_and_never_logged_or_raised(
    script, base_url, monkeypatch, caplog
):
    monkeypatch.setenv("CHARTER_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    script.statuses = [503] * 10
    engine = engine_for(base_url, api_key_env="CHARTER_TEST_KEY", max_retries=2)
    with pytest.raises(InputError) as failure:
        engine.generate([user("hi")], SAMPLING)
    assert "failed 3 times" in str(failure.value) and "HTTP 503" in str(failure.value)
    assert all(s["auth"] == f"Bearer {SECRET}" for s in script.seen)
    for text in (str(failure.value), caplog.text, repr(engine)):
        assert SECRET not in text
    script.statuses = [401]
    with pytest.raises(InputError, match=r"not authorised: check \$CHARTER_TEST_KEY") as denied:
        engine.generate([user("hi")], SAMPLING)
    assert SECRET not in str(denied.value)


def test_no_key_sends_no_authorization(script, base_url, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    engine_for(base_url).generate([user("hi")], SAMPLING)
    assert script.seen[0]["auth"] is None


def test_concurrency_is_bounded_and_order_kept(script, base_url):
    script.delay_s = 0.1  # requests stay in flight a while: room for a fourth to show itself
    chats = [user(f"q{i}") for i in range(12)]
    engine = engine_for(base_url, max_concurrency=3)
    in_flight = InFlight(engine, width=3)
    out = engine.generate(chats, SAMPLING)
    assert in_flight.most == 3  # the bound is reached, never passed
    assert script.max_in_flight <= 3  # and the server never sees more
    assert [o[0].text.split(" #")[0] for o in out] == [f"q{i}" for i in range(12)]


def test_seeds_follow_the_chat_not_its_position(script, base_url):
    engine = engine_for(base_url)
    a = engine.generate([user("x"), user("y")], SAMPLING)
    b = engine.generate([user("y"), user("x")], SAMPLING)
    assert a[0][0].text == b[1][0].text and a[1][0].text == b[0][0].text
    other = engine.generate([user("x")], SamplingSettings(max_new_tokens=16, seed=4))
    assert other[0][0].text != a[0][0].text


def test_choices_outside_the_top_k_get_a_counted_floor(script, base_url):
    script.top_logprobs = [("A", -0.5), ("C", -1.5)]
    engine = engine_for(base_url)
    scores = engine.choice_logprobs([user("A or B?")], ["A", "B"])[0]
    assert math.isclose(math.exp(scores["A"]) + math.exp(scores["B"]), 1.0)
    floor = math.log(1 - math.exp(-0.5) - math.exp(-1.5))  # the unlisted mass, below -1.5
    assert scores["A"] - scores["B"] == pytest.approx(-0.5 - floor)
    assert engine.floored_scores == 1
    assert script.seen[0]["body"]["max_tokens"] == 1


def test_a_prefill_without_tokenizer_or_vllm_is_refused(base_url):
    chat = [*user("Say hi"), {"role": "assistant", "content": "Hi"}]
    with pytest.raises(InputError, match="assistant turn to continue"):
        engine_for(base_url).generate([chat], SAMPLING)


def test_an_unreachable_server_is_one_clear_error():
    # a port held, but not listened on, for the whole test: connections are refused, and no
    # other process can start listening on it between choosing it and connecting
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(InputError, match=f"127.0.0.1:{port}/v1/models failed 2 times"):
            url = f"http://127.0.0.1:{port}/v1"
            OpenAIEngine("m", base_url=url, max_retries=1, backoff_s=0.01)


# --- a real `vllm serve` ------------------------------------------------------------------------

STARTUP_S = 300  # eager start-up is ~30 s on 2 idle cores; allow for busy shared ones
SERVED = "smollm2-135m-instruct"  # served under charter's own name, so configs work unchanged
KEY_ENV = "CHARTER_TEST_VLLM_KEY"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> bool:
    """True once the server answers ``url``; False if it exited because its port was taken."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if "address already in use" in log.read_text().lower():
                return False
            pytest.fail(f"vllm serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except OSError:
            time.sleep(2)
    pytest.fail(f"vllm serve not ready in {STARTUP_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vllm serve`` SmolLM2 on a free loopback port; always stopped, with its children."""
    from tests.engine_fixtures import smollm2_dir

    tmp = tmp_path_factory.mktemp("vllm-serve")
    # the server demands the key (from its environment, not its command line, which `ps` shows)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TMPDIR": str(tmp), "VLLM_API_KEY": SECRET}
    env.pop("OPENAI_API_KEY", None)
    cmd = [
        # `vllm serve` itself fails in vllm-cpu 0.32: it asks for the version of a distribution
        # named "vllm", and this one is "vllm-cpu". The api_server module is the same server.
        *(
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(smollm2_dir()),
        ),
        *("--host", "127.0.0.1", "--served-model-name", SERVED),
        *("--dtype", "float32", "--max-model-len", "2048", "--seed", "0"),
        # eager: starts in seconds; no chunked prefill: vllm-cpu 0.32 crashes on seeded requests
        # whose prefill is split (see VLLMEngine)
        *("--enable-prefix-caching", "--enforce-eager", "--no-enable-chunked-prefill"),
    ]
    log = tmp / "server.log"
    # the free port is closed again until the server binds it, seconds of imports later, and
    # another process can take it in between: then the server exits and we try another
    for _ in range(3):
        port = _free_port()
        with log.open("w") as out:
            proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=tmp,
                                    start_new_session=True)  # fmt: skip
        try:
            ready = _wait_ready(f"http://127.0.0.1:{port}/health", proc, log)  # needs no key
        except BaseException:
            _stop(proc)
            raise
        if ready:
            break
        _stop(proc)
    else:
        pytest.fail(f"vllm serve found its port taken 3 times:\n{log.read_text()[-3000:]}")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it and its workers), SIGKILL after 60 s."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)  # its own session: the server and any workers it started
        except ProcessLookupError:
            return  # already gone
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def server_key() -> Iterator[None]:
    """The key in the environment variable the engines are told to read, for this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, SECRET)
        yield


def served_engine(base_url: str, **kwargs: Any) -> OpenAIEngine:
    kwargs = {"tokenizer": SERVED, "vllm_extensions": True, "api_key_env": KEY_ENV, **kwargs}
    return OpenAIEngine(SERVED, base_url=base_url, **kwargs)


@pytest.fixture(scope="module")
def served(vllm_server: str, server_key: None) -> OpenAIEngine:
    return served_engine(vllm_server)


JUDGE_CHATS = [
    [
        {"role": "system", "content": "You are a careful, impartial judge."},
        {"role": "user", "content": f"Which reply is kinder?\n(A) {a}\n(B) {b}\nAnswer A or B."},
        {"role": "assistant", "content": "The better response is ("},
    ]
    for a, b in [
        ("Thanks, happy to help!", "Go away."),
        ("Go away.", "Thanks, happy to help!"),
        ("Sure, here you are.", "I will not."),
    ]
]


@pytest.mark.vllm
@pytest.mark.slow
def test_server_samples_are_seeded_and_counted(served):
    assert served.context_length == 2048  # from the server
    chats = [user("Name a colour."), user("Say something about cats.")]
    first = served.generate(chats, SAMPLING, n=2)
    again = served.generate(chats[::-1], SAMPLING, n=2)
    assert first == again[::-1]
    for completions in first:
        assert len(completions) == 2
        for c in completions:
            assert c.finish_reason in ("stop", "length") and 0 < c.num_tokens <= 16
            assert c.finish_reason == "stop" or c.num_tokens == 16


@pytest.mark.vllm
@pytest.mark.slow
def test_server_continues_a_prefilled_turn_in_both_modes(vllm_server, served):
    chat = [*user("What is the capital of France?"), {"role": "assistant", "content": "The"}]
    greedy = SamplingSettings(max_new_tokens=8, temperature=0.0)
    by_tokens = served.generate([chat], greedy)[0][0]
    chat_mode = served_engine(vllm_server, tokenizer=None)
    by_chat = chat_mode.generate([chat], greedy)[0][0]
    assert by_tokens.text == by_chat.text  # the server's template rendering equals ours
    assert not by_tokens.text.startswith("The")  # continued, not restarted


@pytest.mark.vllm
@pytest.mark.slow
def test_server_choice_scores_match_the_transformers_engine(vllm_server, served):
    from charter.generators.transformers_engine import TransformersEngine

    reference = TransformersEngine("smollm2-135m-instruct").choice_logprobs(JUDGE_CHATS, ["A", "B"])
    exact = served.choice_logprobs(JUDGE_CHATS, ["A", "B"])
    top_k = served_engine(vllm_server, vllm_extensions=False)
    listed = top_k.choice_logprobs(JUDGE_CHATS, ["A", "B"])
    assert served.floored_scores == 0 and top_k.floored_scores == 0
    for ref, e, k in zip(reference, exact, listed, strict=True):
        assert math.exp(e["A"]) == pytest.approx(math.exp(ref["A"]), abs=0.05)
        assert e["A"] == pytest.approx(k["A"], abs=1e-4)  # the same numbers, read two ways
    multi = served.choice_logprobs(JUDGE_CHATS[:1], ["A) Thanks", "B) Go"])[0]
    assert math.isclose(sum(math.exp(v) for v in multi.values()), 1.0, abs_tol=1e-9)


@pytest.mark.vllm
@pytest.mark.slow
def test_server_constrains_a_generated_verdict_to_a_json_schema(served):
    verdict = {
        "type": "object",
        "properties": {
            "better": {"enum": ["A", "B"]},
            "reason": {"type": "string", "maxLength": 40},
        },
        "required": ["better", "reason"],
        "additionalProperties": False,
    }
    chat = user("Which is kinder, (A) 'Thanks!' or (B) 'Go away.'? Reply in JSON.")
    greedy = SamplingSettings(max_new_tokens=48, temperature=0.0)
    out = served.generate([chat], greedy, json_schema=verdict)[0][0]
    assert served.supports_json_schema and out.finish_reason == "stop"
    jsonschema.validate(json.loads(out.text), verdict)


# --- the same server behind a proxy that fails on cue ---------------------------------------


class ForwardingHandler(BaseHTTPRequestHandler):
    """Forwards each request to the real server, unless the script says to fail it first."""

    server: ForwardingProxy

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        self._forward(self.rfile.read(int(self.headers["Content-Length"])))

    def _forward(self, body: bytes | None) -> None:
        script = self.server.script
        with script.lock:
            script.seen.append({"auth": self.headers.get("Authorization"), "path": self.path})
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
            status = script.statuses.pop(0) if script.statuses else 200
        try:
            if status != 200:
                payload, headers = b'{"error": {"message": "proxy says no"}}', {}
            else:
                request = urllib.request.Request(
                    self.server.upstream + self.path.removeprefix("/v1"),
                    data=body,
                    headers={k: v for k, v in self.headers.items() if k != "Host"},
                    method=self.command,
                )
                with urllib.request.urlopen(request, timeout=120) as upstream:
                    payload, headers = upstream.read(), {}
        finally:
            # out of flight once the answer is ready: counting until after the write would let
            # the client's next request, sent as soon as it reads this one, overlap it here
            with script.lock:
                script.in_flight -= 1
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class ForwardingProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), ForwardingHandler)
        self.upstream = upstream
        self.script = script


@pytest.fixture
def flaky_proxy(vllm_server: str) -> Iterator[tuple[str, Script]]:
    script = Script()
    proxy = ForwardingProxy(vllm_server, script)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}/v1", script
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.vllm
@pytest.mark.slow
def test_server_retries_through_failures_with_bounded_concurrency(flaky_proxy, served, caplog):
    url, script = flaky_proxy
    caplog.set_level(logging.DEBUG)
    engine = served_engine(url, max_concurrency=2, backoff_s=0.05)
    in_flight = InFlight(engine, width=2)
    script.statuses = [503, 429, 502]  # the next three requests fail, then all go through
    chats = [user(f"Name an animal whose name starts with {c}.") for c in "BCDFGH"]
    greedy = SamplingSettings(max_new_tokens=8, temperature=0.0)
    through_proxy = engine.generate(chats, greedy)
    assert through_proxy == served.generate(chats, greedy)  # same answers, same order
    generates = [s for s in script.seen if s["path"].endswith("/completions")]
    assert len(generates) == len(chats) + 3  # each failure retried once
    assert in_flight.most == 2  # the bound is reached, never passed, retries included
    assert script.max_in_flight <= 2  # and the proxy never sees more
    assert all(s["auth"] == f"Bearer {SECRET}" for s in script.seen)
    assert "HTTP 503" in caplog.text  # the retry is logged, the key is not
    for text in (caplog.text, repr(engine), repr(through_proxy)):
        assert SECRET not in text


@pytest.mark.vllm
@pytest.mark.slow
def test_server_without_the_key_is_refused_in_one_line(vllm_server, monkeypatch):
    monkeypatch.delenv("CHARTER_TEST_NO_KEY", raising=False)
    with pytest.raises(InputError, match=r"HTTP 401, not authorised: check \$CHARTER_TEST_NO_KEY"):
        served_engine(vllm_server, api_key_env="CHARTER_TEST_NO_KEY")


@pytest.mark.vllm
@pytest.mark.slow
def test_smoke_run_on_the_server_writes_a_dataset_and_never_the_key(vllm_server, tmp_path):
    from datasets import load_from_disk

    engine_keys = [
        f"{role}.engine.{key}={value}"
        for role in ("generator", "judge")
        for key, value in (("base_url", vllm_server), ("api_key_env", KEY_ENV))
    ]
    run = tmp_path / "run"
    result = subprocess.run(
        [
            *(sys.executable, "-c", "from charter.cli import main; main()", "run"),
            *("experiment=smoke", "engine@generator.engine=openai", "engine@judge.engine=openai"),
            *engine_keys,
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        env={**os.environ, KEY_ENV: SECRET},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(load_from_disk(str(run / "dataset"))) == 3
    written = [p for p in run.rglob("*") if p.is_file()]
    cache = sorted(Path(os.environ["CHARTER_CACHE_DIR"]).glob("calls.sqlite*"))  # and its WAL
    assert len(written) > 5 and cache
    for path in [*written, *cache]:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.stdout + result.stderr
