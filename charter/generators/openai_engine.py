"""Any OpenAI-compatible server (vLLM's ``vllm serve``, hosted APIs) behind the Engine protocol.

Plain standard-library HTTP in a bounded thread pool: the requests are independent, the server
batches them, and charter gains no dependency. Transient failures (429, 5xx, timeouts, dropped
connections, a body cut short or not JSON) are retried with exponential backoff and jitter, a
server's ``Retry-After`` honoured up to 30 s; once the retries run out, or on any other failure,
the call ends in one line naming the URL and the cause. The API key is read from the
environment, sent only in the ``Authorization`` header, and never logged, raised or written
anywhere.

Two ways to talk to the server:

* ``tokenizer`` given (a local copy of the served model's tokenizer): chats are rendered here
  exactly as the other engines render them and sent as token ids to ``/completions``. Prefilled
  assistant turns work on any server, and choice scores are comparable across backends.
* no ``tokenizer``: chats go to ``/chat/completions`` and the server applies its template.
  Continuing a prefilled assistant turn then needs vLLM's ``continue_final_message``
  (``vllm_extensions=True``).

Choice scores come from the server's top-``top_logprobs`` next-token list; an answer without
that list is one clear error (the server does not return log-probs). A choice missing from it
gets a floor (the smaller of the last listed log-prob and the log of the unlisted mass: an
upper bound on its true value), counted in :attr:`OpenAIEngine.floored_scores` and warned about.
With ``vllm_extensions=True`` and a tokenizer, vLLM's ``logprob_token_ids`` returns the choice
tokens' own log-probs instead: exact, never floored.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.generators.rendering import (
    choice_targets,
    render_chats,
    request_seed,
    scoring_requests,
    stop_token_ids,
    summed_scores,
)
from charter.records import Chat, Completion

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0


class OpenAIEngine:
    """A model behind an OpenAI-compatible HTTP API.

    Args:
        model: the served model name (what the server calls it); also the provenance id.
        base_url: the API root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: environment variable holding the key; unset means no ``Authorization``.
        tokenizer: local tokenizer of the served model (embedded name, folder or cached hub id);
            see the module docstring for what it changes.
        context_length: prompt + response token limit; by default vLLM's ``max_model_len`` from
            ``/models``, else the tokenizer's ``model_max_length``.
        system_prompt: put first in every chat that has no system message.
        max_concurrency: requests in flight at once.
        timeout_s: per-request socket timeout.
        max_retries: retries of a transient failure before giving up.
        backoff_s: first retry delay; doubled each retry, with jitter, at most 30 s.
        top_logprobs: size of the next-token list read for choice scores (20 is OpenAI's max).
        vllm_extensions: send vLLM's extra request fields (exact choice scores, prefills in chat
            mode, stop tokens, per-sample token ids). Other servers reject them.
        cache_dir: where an embedded tokenizer's model is converted.
        price_per_mtok: ``{"input": ..., "output": ...}``, the price of a million tokens, for
            ``charter plan``'s cost estimate and ``budget.max_cost``; it changes no output.

    Raises:
        InputError: the server cannot be reached or rejects the model list, or no context
            length can be found.
    """

    supports_json_schema = True
    # the server batches for itself: a stage hands it every request in one call
    schedules_own_batches = True
    """``generate(..., json_schema=...)`` sends OpenAI's ``response_format`` (a JSON schema),
    which vLLM and OpenAI enforce while decoding; a server without it answers HTTP 400."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        tokenizer: str | None = None,
        context_length: int | None = None,
        system_prompt: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        top_logprobs: int = 20,
        vllm_extensions: bool = False,
        cache_dir: str | None = None,
        price_per_mtok: dict[str, float] | None = None,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise InputError("max_concurrency >= 1, max_retries >= 0 and timeout_s > 0 required")
        self.model_id = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or None
        self.system_prompt = system_prompt
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.top_logprobs = top_logprobs
        self.vllm_extensions = vllm_extensions
        self.price_per_mtok = dict(price_per_mtok) if price_per_mtok else None
        self.floored_scores = 0
        self.tokenizer: Any = None
        if tokenizer is not None:
            from transformers import AutoTokenizer

            from charter.generators.model_files import resolve_model

            path = resolve_model(tokenizer, Path(cache_dir) if cache_dir else None)
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.context_length = context_length or self._served_context_length()

    def __repr__(self) -> str:  # the key stays out of reprs, logs and tracebacks
        return f"OpenAIEngine(model={self.model_id!r}, base_url={self.base_url!r})"

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        """Prompt tokens per chat: exact with a tokenizer, else an over-estimate (chars / 3)."""
        if self.tokenizer is not None:
            return [len(ids) for _, ids in render_chats(self.tokenizer, chats, self.system_prompt)]
        return [sum(4 + math.ceil(len(m["content"]) / 3) for m in self._messages(c)) for c in chats]

    def generate(
        self,
        chats: Sequence[Chat],
        sampling: SamplingSettings,
        n: int = 1,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> list[list[Completion]]:
        """Sample ``n`` responses per chat, one request per chat (see ``Engine.generate``).

        Each request carries a seed drawn from ``sampling.seed`` and the chat, so reruns against
        the same server and model repeat, if the server honours seeds (vLLM does). ``json_schema``
        asks for JSON matching it (``response_format``).
        """
        common: dict[str, Any] = {
            "model": self.model_id,
            "n": n,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
        }
        if json_schema:
            common["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": json_schema, "strict": True},
            }
        if self.vllm_extensions:
            common["return_token_ids"] = True
            if self.tokenizer is not None:  # end-of-turn tokens besides the model's EOS
                common["stop_token_ids"] = stop_token_ids(self.tokenizer)
        bodies = []
        for key, body in self._request_bodies(chats):
            body = {**common, **body, "seed": request_seed(sampling.seed, key)}
            if "prompt" in body:  # token ids: keep prompt + response inside the context
                room = self.context_length - len(body["prompt"])
                body["max_tokens"] = max(1, min(sampling.max_new_tokens, room))
            bodies.append(body)
        path = "/completions" if self.tokenizer is not None else "/chat/completions"
        replies = self._map(lambda b: self._post(path, b), bodies)
        return [self._completions(reply, n) for reply in replies]

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        """Log-probability of each choice after each chat, renormalised over the choices.

        One greedy one-token request per chat, plus one per distinct choice prefix for choices
        of several tokens (scored token by token, which needs a tokenizer: without one, each
        choice is looked up by its text as a single token). See the module docstring for when a
        score is exact and when it is floored.

        Raises:
            InputError: choices are empty, repeated, or tokenize identically.
        """
        choices = list(choices)
        if self.tokenizer is None:
            if not choices or len(set(choices)) != len(choices) or not all(choices):
                raise InputError(f"choices must be distinct non-empty strings, got {choices!r}")
            bodies = [
                {**body, **self._score_fields(None)} for _, body in self._request_bodies(chats)
            ]
            replies = self._map(lambda b: self._post("/chat/completions", b), bodies)
            return [_renormalised(self._lookup(r, choices, chat=True)) for r in replies]
        rendered = render_chats(self.tokenizer, chats, self.system_prompt)
        targets = choice_targets(self.tokenizer, rendered, choices)
        wanted = scoring_requests(targets)
        keys = list(wanted)
        bodies = [
            {
                "model": self.model_id,
                "prompt": rendered[i][1] + list(prefix),
                **self._score_fields(wanted[(i, prefix)]),
            }
            for i, prefix in keys
        ]
        replies = self._map(lambda b: self._post("/completions", b), bodies)
        step: dict[tuple[int, tuple[int, ...], int], float] = {}
        for (i, prefix), reply in zip(keys, replies, strict=True):
            labels = {self._token_label(t): t for t in wanted[(i, prefix)]}
            for label, value in self._lookup(reply, list(labels), chat=False).items():
                step[(i, prefix, labels[label])] = value
        return summed_scores(targets, choices, step)

    # --- requests ---------------------------------------------------------------------------

    def _messages(self, chat: Chat) -> list[dict[str, str]]:
        messages = list(chat)
        if self.system_prompt is not None and all(m["role"] != "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def _request_bodies(self, chats: Sequence[Chat]) -> list[tuple[str | list[int], dict]]:
        """Per chat, ``(seed key, the prompt part of a request body)``."""
        if self.tokenizer is not None:
            rendered = render_chats(self.tokenizer, chats, self.system_prompt)
            return [(ids, {"prompt": ids}) for _, ids in rendered]
        out: list[tuple[str | list[int], dict]] = []
        for i, chat in enumerate(chats):
            messages = self._messages(chat)
            body: dict[str, Any] = {"model": self.model_id, "messages": messages}
            if messages and messages[-1]["role"] == "assistant":
                if not self.vllm_extensions:
                    raise InputError(
                        f"chat {i} ends with an assistant turn to continue: give the engine a "
                        "tokenizer, or set vllm_extensions=true for a vLLM server"
                    )
                body |= {"continue_final_message": True, "add_generation_prompt": False}
            out.append((json.dumps(messages, sort_keys=True), body))
        return out

    def _score_fields(self, token_ids: list[int] | None) -> dict[str, Any]:
        """Request fields for one greedy token with its log-probs."""
        fields: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0}
        if self.tokenizer is None:
            return fields | {"logprobs": True, "top_logprobs": self.top_logprobs}
        if self.vllm_extensions and token_ids:
            return fields | {
                "logprobs": len(token_ids),
                "logprob_token_ids": token_ids,
                "return_tokens_as_token_ids": True,
            }
        return fields | {"logprobs": self.top_logprobs}

    def _token_label(self, token: int) -> str:
        """How the server names ``token`` in its log-prob lists."""
        if self.vllm_extensions:
            return f"token_id:{token}"
        return self.tokenizer.decode([token])

    def _lookup(self, reply: dict, labels: list[str], *, chat: bool) -> dict[str, float]:
        """The log-prob of each label at the first generated position, floored if unlisted."""
        logprobs = reply["choices"][0].get("logprobs") or {}
        try:
            if chat:
                entries = logprobs["content"][0]["top_logprobs"]
                listed = {e["token"]: float(e["logprob"]) for e in entries}
            else:
                listed = {k: float(v) for k, v in logprobs["top_logprobs"][0].items()}
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            # not a floor: with no list at all every choice would tie, a silent coin flip
            raise InputError(
                f"{self.base_url}: the answer has no top log-probs for its first token, which "
                "choice scores need; use a server that returns logprobs (vLLM does)"
            ) from None
        missing = [label for label in labels if label not in listed]
        if missing:
            mass = sum(math.exp(v) for v in listed.values())
            floor = min([*listed.values(), math.log(max(1.0 - mass, 1e-12))])
            self.floored_scores += len(missing)
            log.warning(
                "%d choice(s) not among the server's top-%d log-probs; scored at the floor %.2f",
                len(missing),
                self.top_logprobs,
                floor,
            )
            listed |= dict.fromkeys(missing, floor)
        return {label: listed[label] for label in labels}

    def _completions(self, reply: dict, n: int) -> list[Completion]:
        choices = sorted(reply["choices"], key=lambda c: c["index"])
        usage = reply.get("usage") or {}
        out = []
        for c in choices:
            text = c["text"] if "text" in c else c["message"]["content"] or ""
            reason = "length" if c.get("finish_reason") == "length" else "stop"
            if c.get("token_ids") is not None:
                count = len(c["token_ids"])
            elif n == 1 and "completion_tokens" in usage:
                count = usage["completion_tokens"]
            elif self.tokenizer is not None:
                count = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                count += reason == "stop"
            else:
                count = math.ceil(len(text) / 3)
            out.append(Completion(text.strip(), reason, count))
        return out

    def _served_context_length(self) -> int:
        models = self._request("GET", "/models", None).get("data", [])
        served = next((m for m in models if m.get("id") == self.model_id), None)
        if served and served.get("max_model_len"):
            return int(served["max_model_len"])
        limit = getattr(self.tokenizer, "model_max_length", None)
        if limit and limit < 10**7:  # transformers uses a huge sentinel for "unknown"
            return int(limit)
        raise InputError(
            f"cannot tell the context length of {self.model_id!r}: set context_length",
            field="context_length",
        )

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` with at most ``max_concurrency`` in flight, in input order."""
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            futures = [pool.submit(fn, item) for item in items]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A completion request; its answer must carry choices, each a JSON object."""
        reply = self._request("POST", path, body)
        choices = reply.get("choices")
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(c, dict) for c in choices)
        ):
            raise InputError(
                f"POST {self.base_url + path}: the answer has no choices: "
                f"{self._masked(json.dumps(reply)[:200])}"
            )
        return reply

    def _masked(self, text: str) -> str:
        """``text`` from the server, with the key blanked should the server echo it."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One API call, retried on transient failures; errors name the URL, never the key."""
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        problem, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                detail = self._masked(_error_body(exc))
                if exc.code in (401, 403):
                    raise InputError(
                        f"{method} {url}: HTTP {exc.code}, not authorised: check "
                        f"${self.api_key_env}"
                    ) from None
                if exc.code not in RETRY_STATUS:
                    raise InputError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
                problem, retry_after = f"HTTP {exc.code}", _seconds(exc.headers.get("Retry-After"))
            except (OSError, http.client.HTTPException) as exc:
                # refused, reset, timed out, or closed mid-body (IncompleteRead) or mid-header
                problem, retry_after = _cause(exc), None
            else:
                try:
                    answer = json.loads(raw)
                except ValueError as exc:  # a body cut short by a proxy, or not JSON at all
                    problem = f"malformed JSON body ({exc})"
                else:
                    if isinstance(answer, dict):
                        return answer
                    problem = f"the body is a JSON {type(answer).__name__}, not an object"
                retry_after = None
            log.info("%s %s failed (%s), attempt %d", method, url, problem, attempt + 1)
        raise InputError(f"{method} {url} failed {self.max_retries + 1} times; last: {problem}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a server's ``Retry-After`` wins (both capped)."""
        if retry_after is not None:
            return min(retry_after, MAX_BACKOFF_S)
        base = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
        return base / 2 + random.uniform(0, base / 2)


def _cause(exc: BaseException) -> str:
    """What went wrong with a connection, in a few words for the error line."""
    if isinstance(exc, http.client.IncompleteRead):
        return (
            f"IncompleteRead: the server closed the connection mid-body ({len(exc.partial)} "
            f"bytes read, {exc.expected} more expected)"
        )
    reason = getattr(exc, "reason", None) or exc
    return f"{type(exc).__name__}: {reason}"


def _error_body(exc: urllib.error.HTTPError) -> str:
    """The start of an HTTP error's body; empty if reading it fails too (a dropped connection)."""
    try:
        return exc.read().decode(errors="replace")[:300]
    except (OSError, http.client.HTTPException):
        return ""


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (its HTTP-date form is ignored)."""
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def _renormalised(scores: dict[str, float]) -> dict[str, float]:
    top = max(scores.values())
    total = top + math.log(sum(math.exp(v - top) for v in scores.values()))
    return {c: v - total for c, v in scores.items()}
