"""The OpenAI chat-completions shapes this server speaks (a subset), as pydantic models
for requests and plain dicts for responses, and the `autodidact` extension field.

A response carries, besides OpenAI's fields, `autodidact: {"risk": r, "route": ...,
"outcome": ...}`: the probe's risk read from the question's prefill before any token was
generated (null without a probe), the refine route taken (greedy, abstain,
self_consistency, best_of_n, fallback) and its outcome (answered, abstained, refined). A
streamed response sends it in its last chunk. OpenAI's clients keep unknown fields, so
`response.autodidact` (the Python client) reads it.

The model improved on single questions, so a request is one user message (its text, or
its text parts joined), after any system messages, whose text goes before it (as the
planners' own engine model flattens them): a conversation with assistant turns is refused
with the reason rather than silently cut."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.gate import Answer


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat-completions request this server reads; others are
    ignored (their defaults are what it does anyway), except those it cannot honour,
    which `problems` names."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    logprobs: bool | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def question(self) -> str:
        """The system messages' text, then the user's, as one prompt.

        >>> ChatRequest(model="m", messages=[{"role": "system", "content": "Be brief."},
        ...     {"role": "user", "content": "Hi"}]).question()
        'Be brief.\\n\\nHi'
        """
        return "\n\n".join(m.text() for m in self.messages)

    def token_budget(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def json_schema(self) -> str | None:
        """The JSON Schema the answer must follow, as a string ("{}": any JSON object), or
        None (free text); ValueError for a response_format this server does not know.

        >>> ChatRequest(model="m", messages=[{"role": "user", "content": "q"}],
        ...     response_format={"type": "json_schema", "json_schema": {"name": "p",
        ...     "schema": {"type": "object"}}}).json_schema()
        '{"type": "object"}'
        """
        kind = (self.response_format or {}).get("type", "text")
        if kind == "text":
            return None
        if kind == "json_object":
            return "{}"
        if kind == "json_schema":
            spec = (self.response_format or {}).get("json_schema") or {}
            if not isinstance(spec.get("schema"), dict):
                raise ValueError("response_format json_schema needs json_schema.schema, an object")
            return json.dumps(spec["schema"])
        raise ValueError(f"response_format type {kind!r}: use text, json_object or json_schema")

    def problems(self, *, gated: bool) -> list[str]:
        """Why this server cannot answer the request as asked (empty: it can).

        >>> ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}]).problems(gated=True)
        []
        >>> ChatRequest(model="m", messages=[{"role": "user", "content": "a"},
        ...     {"role": "assistant", "content": "b"}], n=2).problems(gated=False)[0]
        "one user message per request, after any system messages (got roles 'user', 'assistant'): this server answers single questions, as the model was improved on them"
        """
        found = []
        roles = [m.role for m in self.messages]
        if roles[-1:] != ["user"] or any(r not in ("system", "developer") for r in roles[:-1]):
            shown = ", ".join(repr(r) for r in roles)
            found.append(
                f"one user message per request, after any system messages (got roles {shown}): "
                "this server answers single questions, as the model was improved on them"
            )
        elif not self.messages[-1].text().strip():
            found.append("the user message is empty")
        if (self.n or 1) > 1:
            found.append("n must be 1: one answer per request (send n requests)")
        if self.logprobs:
            found.append("logprobs are not returned by this server (the risk is: see autodidact)")
        if self.tools:
            found.append("tools are not supported by this server")
        if gated and self.stops():
            found.append("stop is not supported with the gate on (serve --refine none)")
        try:
            schema = self.json_schema()
        except ValueError as error:
            found.append(str(error))
        else:
            if gated and schema is not None:
                found.append("response_format json needs the gate off (serve --refine none)")
        return found


def error_body(
    message: str, kind: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def extension(answer: Answer) -> dict[str, Any]:
    return {"risk": answer.risk, "route": answer.route, "outcome": answer.outcome}


def completion(
    model: str, answer: Answer, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A whole chat completion."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": finish_reason(answer),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "autodidact": extension(answer),
    }


def chunks(model: str, answer: Answer) -> list[dict[str, Any]]:
    """A streamed completion: the role, the answer (in one piece: the gate needs the whole
    answer's route before any of it is sent), then the finish reason and the extension."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

    return [
        chunk({"role": "assistant", "content": ""}, None),
        chunk({"content": answer.text}, None),
        chunk({}, finish_reason(answer), autodidact=extension(answer)),
    ]


def finish_reason(answer: Answer) -> str:
    return "length" if answer.finish_reason == "length" else "stop"


def model_list(name: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "autodidact"}],
    }
