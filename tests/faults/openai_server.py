"""The scripted OpenAI-shaped server of tests/test_openai_engine.py, taught to misbehave further.

Each POST first takes the next entry of ``faults`` (then the plain script runs as before):

* ``"incomplete"``: headers promise a long body, a few bytes come, the connection closes
  (the client reads ``http.client.IncompleteRead``);
* ``"reset"``: the connection is reset (RST) before any answer;
* ``"malformed"``: status 200 with a body that is not JSON;
* ``"no_logprobs"``: a normal answer whose choices carry no log-probs;
* ``"no_choices"``: status 200 with a JSON object that is no completion;
* ``"stall_body"``: headers at once, then nothing until the test ends;
* ``("retry_after", "SECONDS", status)``: that status with that ``Retry-After`` header.

Everything stays on 127.0.0.1, and every stall ends when the test's server is shut down.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.test_openai_engine import Handler, Script, ScriptedServer

Fault = str | tuple[str, str, int]


@dataclass
class FaultScript(Script):
    """A :class:`Script` plus one fault per request, in order, and a reply of choice."""

    faults: list[Fault] = field(default_factory=list)
    answered: int = 0


class FaultyHandler(Handler):
    server: FaultyServer

    def do_POST(self) -> None:
        script = self.server.script
        with script.lock:
            fault = script.faults.pop(0) if script.faults else None
        if fault is None:
            super().do_POST()
            with script.lock:
                script.answered += 1
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with script.lock:
            script.seen.append({"auth": self.headers.get("Authorization"), "body": body})
        if fault == "incomplete":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"choices": [')
            self.wfile.flush()
            self.close_connection = True
        elif fault == "reset":
            # linger 0: close() sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif fault == "malformed":
            data = b'{"choices": [{"index": 0, "message": '  # cut short by a proxy
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif fault == "no_logprobs":
            payload = self._completion(body)
            for choice in payload["choices"]:
                choice.pop("logprobs")
            self._reply(200, payload)
        elif fault == "no_choices":
            self._reply(200, {"object": "error", "message": "model overloaded"})
        elif fault == "stall_body":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            script.release.wait(60.0)
            self.close_connection = True
        else:
            _, seconds, status = fault
            error = {"error": {"message": f"scripted {status}"}}
            self._reply(status, error, {"Retry-After": seconds})


class FaultyServer(ScriptedServer):
    def __init__(self, script: FaultScript) -> None:
        super().__init__(script)
        self.RequestHandlerClass = FaultyHandler
        self.script: FaultScript = script


def serve(script: FaultScript) -> Iterator[str]:
    """Run a :class:`FaultyServer` for ``script`` on a free loopback port; yield its base URL."""
    server = FaultyServer(script)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        script.release.set()  # stalled handlers end with the test
        server.shutdown()
        server.server_close()


def openai_run_args(base_url: str, tmp: Path, *extra: str) -> list[str]:
    """``charter run experiment=smoke`` with both roles on the scripted server (chat mode)."""
    engine = [
        f"{role}.engine.{key}={value}"
        for role in ("generator", "judge")
        for key, value in (
            ("base_url", base_url),
            ("model", "tiny"),
            ("tokenizer", "null"),
            ("context_length", "4096"),
            ("max_retries", "1"),
            ("backoff_s", "0.01"),
            ("timeout_s", "5"),
        )
    ]
    return [
        "run",
        "experiment=smoke",
        "engine@generator.engine=openai",
        "engine@judge.engine=openai",
        *engine,
        f"hydra.run.dir={tmp / 'run'}",
        *extra,
    ]
