"""`autodidact serve` under load: the real `openai` client on loopback.

    python -m benchmarks.serve [--model M] [--probe DIR] [--refine abstain] [--task arithmetic]
                               [--questions 64] [--clients 16] [--max-tokens 32]

The server runs in this process (uvicorn in a thread, as `autodidact serve` runs it), the
default model behind it. The same questions (the task's dev split) are asked twice: one
at a time by one client, then by `--clients` clients at once (each question once). It
prints: errors (none expected), throughput of each (questions per second) and their
ratio, p50/p95 latency of each, and whether every answer's route is the same in both
and its risk within 1e-4 of the one `answer` computes for the question alone (batched
prompts are left-padded: the probe reads the same states up to float summation order).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RISK_TOLERANCE = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(app: Any, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def timed(ask: Callable[[str], Any], question: str) -> tuple[Any, float]:
    started = time.perf_counter()
    reply = ask(question)
    return reply, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--probe", type=Path, help="probe folder fitted on --model")
    parser.add_argument("--refine", default=None, help="the gate (default: abstain with a probe)")
    parser.add_argument("--task", default="arithmetic")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    import openai

    from agents.refine import refine_answers
    from engines import load_model
    from probes.calibration import Thresholds
    from serving.app import ServeSettings, make_app
    from serving.gate import GatedModel, measured_by
    from tasks import get_task

    engine = load_model(args.model)
    risk_fn = None
    if args.probe is not None:
        from probes.artifact import check_fingerprint, load_probe
        from probes.runtime import RiskScorer

        fitted = load_probe(args.probe)
        check_fingerprint(fitted.card, engine.fingerprint, where=str(args.probe))
        risk_fn = RiskScorer(fitted)
    strategy = args.refine or ("abstain" if risk_fn is not None else "none")
    context, count = measured_by(engine)
    model = GatedModel(
        "served",
        engine,
        risk_fn,
        strategy,
        Thresholds(),
        context_length=context,
        count_tokens=count,
    )  # type: ignore[arg-type]
    questions = [item.prompt for item in get_task(args.task).split("dev")][: args.questions]
    settings = ServeSettings(max_batch=args.clients, max_wait_ms=10, max_queue=4 * args.clients)
    server, thread = start(make_app(model, settings), port := free_port())
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600
    )

    def ask(question: str) -> Any:
        return client.chat.completions.create(
            model="served",
            messages=[{"role": "user", "content": question}],
            max_tokens=args.max_tokens,
            temperature=0,
        )

    errors: list[str] = []

    def safely(question: str) -> tuple[Any, float]:
        try:
            return timed(ask, question)
        except openai.APIError as error:
            errors.append(f"{question!r}: {error}")
            return None, 0.0

    ask(questions[0])  # warm-up: first-call costs are not the server's throughput
    started = time.perf_counter()
    one = [safely(q) for q in questions]
    one_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        many = list(pool.map(safely, questions))
    many_seconds = time.perf_counter() - started
    server.should_exit = True
    thread.join(timeout=30)

    routes_same = risks_close = 0
    for question, (a, _), (b, _) in zip(questions, one, many, strict=True):
        if a is None or b is None:
            continue
        single = refine_answers(
            engine,
            [question],
            strategy=strategy,  # type: ignore[arg-type]
            thresholds=Thresholds(),
            k=model.k,
            temperature=model.temperature,
            max_new_tokens=args.max_tokens,
            risk_fn=risk_fn,
        )[0]
        routes_same += a.autodidact["route"] == b.autodidact["route"] == single.route
        if single.risk is None:
            risks_close += a.autodidact["risk"] is None and b.autodidact["risk"] is None
        else:
            risks_close += all(
                abs(x.autodidact["risk"] - single.risk) <= RISK_TOLERANCE for x in (a, b)
            )
    one_latency = [t for r, t in one if r is not None]
    many_latency = [t for r, t in many if r is not None]
    n = len(questions)
    print(
        f"### serve under load ({args.model}, gate {strategy}, {n} questions, {args.max_tokens} max tokens)"
    )
    print()
    print(f"| | one client, one at a time | {args.clients} clients at once |")
    print("|---|---|---|")
    print(f"| questions per second | {n / one_seconds:.2f} | {n / many_seconds:.2f} |")
    print(
        f"| p50 latency | {statistics.median(one_latency):.2f} s | {statistics.median(many_latency):.2f} s |"
    )
    print(
        f"| p95 latency | {percentile(one_latency, 0.95):.2f} s | {percentile(many_latency, 0.95):.2f} s |"
    )
    print()
    print(f"throughput ratio ({args.clients} clients / one): {one_seconds / many_seconds:.2f}x")
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(
        f"routes equal to `answer`'s alone: {routes_same} of {n}; risks within {RISK_TOLERANCE:g}: {risks_close} of {n}"
    )


if __name__ == "__main__":
    main()
