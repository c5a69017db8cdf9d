"""`autodidact serve` on the tiny model, spoken to by the real `openai` client over
loopback: chat, streaming, /v1/models, the risk and route extension, the gate's
abstention, refusals as 4xx with a message, the API key, a full queue (429), and requests
answered together in one batch."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from engines.base import SamplingParams
from probes.calibration import Thresholds
from serving.app import ServeSettings, make_app
from serving.batching import Batcher, QueueFull
from serving.gate import Answer, GatedModel, Question, measured_by
from tests.tiny_models import tiny_engine

NAME = "tiny"
BATCHERS: dict[str, Batcher[Question, Answer]] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(model: GatedModel, settings: ServeSettings = ServeSettings()) -> Iterator[str]:
    """The app on a loopback port in a thread of this process; its base URL (the app's
    batcher in `BATCHERS[url]`)."""
    import uvicorn

    port = free_port()
    app = make_app(model, settings)
    BATCHERS[f"http://127.0.0.1:{port}/v1"] = app.state.batcher
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def engine() -> Any:
    return tiny_engine()


@pytest.fixture(scope="module")
def risk_fn(engine: Any) -> Any:
    """A real probe on the tiny model's layer 1 (random weights: its risks are numbers in
    (0, 1), which is all the gate needs here)."""
    from probes.fit import EstimatorConfig, export_weights, fit_estimator
    from probes.runtime import RiskScorer
    from tests.probe_fakes import make_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16)).astype(np.float32)
    weights = export_weights(fit_estimator(x, rng.integers(0, 2, 60), EstimatorConfig()))
    return RiskScorer(make_probe(weights, layers=(1,), fingerprint=engine.fingerprint))


def gated(engine: Any, risk_fn: Any, strategy: str = "abstain", high: float = 0.7) -> GatedModel:
    context, count = measured_by(engine)
    return GatedModel(
        NAME,
        engine,
        risk_fn,
        strategy,  # type: ignore[arg-type]
        Thresholds(0.0, high),
        context_length=context,
        count_tokens=count,
    )


def test_chat_stream_and_models_carry_the_risk_and_route(engine: Any, risk_fn: Any) -> None:
    model = gated(engine, risk_fn, high=1.0)  # nothing above 1: every answer is the model's
    with serving(model) as url:
        api = client(url)
        assert [m.id for m in api.models.list()] == [NAME]
        ask = {"model": NAME, "messages": [{"role": "user", "content": "2+3="}], "max_tokens": 6}
        reply = api.chat.completions.create(**ask)
        streamed = list(api.chat.completions.create(**ask, stream=True))
    extension = reply.autodidact  # type: ignore[attr-defined]
    assert extension["route"] == "greedy" and extension["outcome"] == "answered"
    assert 0.0 < extension["risk"] < 1.0
    (greedy,) = engine.generate(["2+3="], SamplingParams(max_new_tokens=6), risk_fn=risk_fn)
    assert reply.choices[0].message.content == greedy.samples[0].text
    assert extension["risk"] == pytest.approx(greedy.risk, abs=1e-6)
    assert reply.usage is not None and reply.usage.completion_tokens >= 0
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == reply.choices[0].message.content
    assert streamed[-1].autodidact["route"] == "greedy"  # type: ignore[attr-defined]
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")


def test_above_the_threshold_the_gate_answers_the_abstention_text(
    engine: Any, risk_fn: Any
) -> None:
    with serving(gated(engine, risk_fn, high=0.0)) as url:  # every risk is above 0
        reply = client(url).chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "capital of Peru?"}], max_tokens=6
        )
    assert reply.choices[0].message.content == "I don't know."
    assert reply.autodidact["route"] == "abstain"  # type: ignore[attr-defined]
    assert reply.autodidact["outcome"] == "abstained"  # type: ignore[attr-defined]


REFUSED = [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}]}, openai.BadRequestError, "one user message per request"),
    ({"messages": []}, openai.BadRequestError, "messages"),
    ({"messages": [{"role": "user", "content": "q"}], "max_tokens": 9999}, openai.BadRequestError, "over this server's limit of 256"),
    ({"messages": [{"role": "user", "content": "q " * 300}], "max_tokens": 200}, openai.BadRequestError, "this model's context is 256 tokens"),
    ({"messages": [{"role": "user", "content": "q"}], "n": 2}, openai.BadRequestError, "n must be 1"),
    ({"messages": [{"role": "user", "content": "q"}], "temperature": 7}, openai.BadRequestError, "temperature"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}, openai.NotFoundError, "this server serves 'tiny'"),
]  # fmt: skip


def test_bad_requests_are_refused_with_a_message(engine: Any, risk_fn: Any) -> None:
    with serving(gated(engine, risk_fn)) as url:
        api = client(url)
        for request, error, message in REFUSED:
            with pytest.raises(error) as caught:
                api.chat.completions.create(**{"model": NAME, **request})  # type: ignore[call-overload]
            assert message in str(caught.value), request
            assert caught.value.status_code < 500


def test_an_api_key_is_required_when_the_server_has_one(engine: Any, risk_fn: Any) -> None:
    with serving(gated(engine, risk_fn), ServeSettings(api_key="s3cret")) as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").models.list()
        assert [m.id for m in client(url, "s3cret").models.list()] == [NAME]


def test_concurrent_requests_are_answered_in_batches(engine: Any, risk_fn: Any) -> None:
    model = gated(engine, risk_fn, high=1.0)
    settings = ServeSettings(max_batch=8, max_wait_ms=200)
    questions = [f"{i}+{i}=" for i in range(8)]
    replies: dict[str, Any] = {}
    with serving(model, settings) as url:
        api = client(url)

        def ask(question: str) -> None:
            replies[question] = api.chat.completions.create(
                model=NAME, messages=[{"role": "user", "content": question}], max_tokens=5
            )

        threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sizes = BATCHERS[url].batches
    assert sorted(replies) == sorted(questions)
    assert all(r.autodidact["route"] == "greedy" for r in replies.values())  # type: ignore[attr-defined]
    assert sum(sizes) == 8 and max(sizes) > 1, f"batches of {sizes}: none answered together"


def test_a_full_queue_refuses_at_once() -> None:
    release = threading.Event()

    def slow(batch: Sequence[int]) -> list[int]:
        release.wait(10)
        return list(batch)

    async def scenario() -> tuple[int, int]:
        batcher: Batcher[int, int] = Batcher(slow, max_batch=1, max_wait=0.0, max_queue=1)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(1))  # taken by the worker
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit(2))  # waits in the queue
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await batcher.submit(3)  # no room
        release.set()
        answers = await asyncio.gather(first, second)
        await batcher.stop()
        return answers[0], answers[1]

    assert asyncio.run(scenario()) == (1, 2)


def test_a_busy_server_answers_429(engine: Any) -> None:
    release = threading.Event()

    class Slow(GatedModel):
        def answer(self, questions: Sequence[Question]) -> list[Answer]:
            release.wait(20)
            return [Answer("ok", "greedy", None, "stop") for _ in questions]

    settings = ServeSettings(max_batch=1, max_wait_ms=0, max_queue=1)
    with serving(Slow(NAME, engine), settings) as url:
        api = client(url)
        ask = lambda: api.chat.completions.create(  # noqa: E731
            model=NAME, messages=[{"role": "user", "content": "q"}], max_tokens=2
        )
        busy = [threading.Thread(target=ask) for _ in range(2)]  # one running, one waiting
        for t in busy:
            t.start()
            time.sleep(0.2)
        with pytest.raises(openai.RateLimitError) as caught:
            ask()
        assert "the server is busy" in str(caught.value)
        release.set()
        for t in busy:
            t.join()


def test_serve_refuses_a_gate_without_a_probe(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.app import make_app as make_cli
    from cli.common import Loaders

    def no_model(_name: str) -> Any:
        raise AssertionError("the model must not load")

    result = CliRunner().invoke(
        make_cli(Loaders(load_engine=no_model)), ["serve", "--refine", "abstain"]
    )
    assert result.exit_code == 2 and "routes on the probe's risk: pass --probe DIR" in result.output


STAGES = ("acquire", "select", "optimize", "monitor")


def test_a_session_whose_planners_talk_http_to_a_served_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every planner is 'openai:tiny' at $OPENAI_BASE_URL: `serve` (the gate off) answers
    each structured proposal under its JSON schema's constraint; the session records every
    proposal with its check, or the fallback to the rules and why."""
    from storage import open_store
    from tests.session_support import odd_length, run_with_verifier

    served = tiny_engine(seed=1, shared_offset=1.0, eos_offset=3.0, max_positions=8192)
    context, count = measured_by(served)
    model = GatedModel(NAME, served, context_length=context, count_tokens=count)
    sets = {f"planner.{stage}": f"openai:{NAME}" for stage in STAGES}
    with serving(model, ServeSettings(max_tokens=256)) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as store:
            state, _ = run_with_verifier(
                store, odd_length, "http", **sets, **{"planner.max_new_tokens": "64"}
            )
        answered = BATCHERS[url].batches
    assert state["status"] == "finished"
    plans = state["plans"]
    assert {plan.stage for plan in plans} == set(STAGES)
    for plan in plans:  # a proposal checked, or the rules' choice with the reason why
        assert plan.source in ("planner", "planner+override", "rules(fallback)"), plan
        assert (plan.proposal is not None) or plan.source == "rules(fallback)"
    assert sum(answered) >= len(plans), "every proposal was asked of the server"
