"""The HTTP application: FastAPI (pydantic request models, async handlers, OpenAI-style
errors) over the gated model and its batcher.

- `GET /health`: up, the model's name, how many requests wait;
- `GET /v1/models`: the one model served;
- `POST /v1/chat/completions`: one question, answered through the gate, whole or streamed
  (server-sent events, ending with `data: [DONE]`).

Every refusal is a 4xx in OpenAI's error shape with a message that says why: 400 for a
malformed request or one this server cannot honour (too many tokens for the model's
context or for `--max-tokens`, more than one message, n > 1, ...), 401 without the API key
(when the server has one), 404 for another model's name, 429 when the queue is full."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from serving.batching import Batcher, QueueFull
from serving.gate import Answer, GatedModel, Question
from serving.protocol import ChatRequest, chunks, completion, error_body, model_list


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_tokens: int = 256  # the most new tokens a request may ask for (and its default)
    api_key: str | None = None  # None: no key asked


class Refusal(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def make_app(model: GatedModel, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The server for `model` with `settings`; its batcher runs while the app does."""
    batcher: Batcher[Question, Answer] = Batcher(
        model.answer,
        max_batch=settings.max_batch,
        max_wait=settings.max_wait_ms / 1000,
        max_queue=settings.max_queue,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="autodidact", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(Refusal)
    async def refused(_request: Request, error: Refusal) -> JSONResponse:
        return JSONResponse(error_body(error.message, error.kind), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(validation_message(error)), status_code=400)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model.name, "waiting": batcher.waiting}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request, settings.api_key)
        return model_list(model.name)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        check_key(request, settings.api_key)
        question, prompt_tokens = admit(body, model, settings)
        try:
            answer = await batcher.submit(question)
        except QueueFull as full:
            raise Refusal(
                429, f"the server is busy ({full}): retry later", "rate_limit_error"
            ) from None
        if body.stream:
            return StreamingResponse(events(model.name, answer), media_type="text/event-stream")
        return completion(model.name, answer, prompt_tokens, model.count_tokens(answer.text))

    return app


def admit(body: ChatRequest, model: GatedModel, settings: ServeSettings) -> tuple[Question, int]:
    """The request as a question for the batcher, and its prompt's tokens; a Refusal
    saying why when it cannot be answered as asked."""
    if body.model != model.name:
        raise Refusal(
            404,
            f"model {body.model!r} is not served here; this server serves {model.name!r}",
            "not_found_error",
        )
    problems = body.problems(gated=model.gated)
    if problems:
        raise Refusal(400, "; ".join(problems))
    budget = body.token_budget(settings.max_tokens)
    if budget > settings.max_tokens:
        raise Refusal(
            400,
            f"max_tokens {budget} is over this server's limit of {settings.max_tokens} (serve --max-tokens)",
        )
    prompt_tokens = model.count_tokens(body.question())
    if prompt_tokens + budget > model.context_length:
        raise Refusal(
            400,
            f"this model's context is {model.context_length} tokens: the question takes "
            f"{prompt_tokens} and max_tokens asks for {budget}; shorten one",
        )
    temperature = 1.0 if body.temperature is None else body.temperature  # OpenAI's default
    question = Question(
        body.question(),
        budget,
        temperature=temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed or 0,
        stop=body.stops(),
        json_schema=body.json_schema(),
    )
    return question, prompt_tokens


def check_key(request: Request, key: str | None) -> None:
    if key is None:
        return
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {key}".encode()):
        raise Refusal(
            401, "a valid API key is required (Authorization: Bearer ...)", "authentication_error"
        )


async def events(model: str, answer: Answer) -> AsyncIterator[str]:
    for chunk in chunks(model, answer):
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def validation_message(error: RequestValidationError) -> str:
    """The first problem pydantic found, as one line ("messages: Field required")."""
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
