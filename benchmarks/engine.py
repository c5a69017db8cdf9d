"""Engine benchmark on the default model: batching, the probe's cost inside generation,
prefill-only cost, and the engine's decoder against transformers' own `generate`.

    python -m benchmarks.engine [--repeats 3] [--only batch capture decoder sampled prefill]
    python -m benchmarks.engine --only capture     (the probe's in-generation cost, ~1 min)
    python -m benchmarks.engine --engine vllm [--vllm-prompts 32]   (with .venv-vllm/bin/python)

Each comparison runs its two sides interleaved (A B, B A, A B, ...: load from other
processes on this shared machine falls on both alike), `--repeats` times, and its ratio is
computed from the two medians of that one loop. The ratios the foundation issue targets:
batched generation >= 4x a per-prompt loop (batch 32); the probe inside generation (prefill
capture and the probe scoring each prompt's states, `generate`'s `risk_fn`) <= 5% over the same
generation without either; prefill-only extraction >= 1.25x a full forward that computes
every position's vocabulary logits. Beside them: the decoder (finished rows leave the
batch, one prefill per prompt) against `model.generate`, greedy on capitals and sampled
(4 samples, 96 new tokens) on arithmetic, where answers vary most in length; each printed
as `generate / decoder` time, and which is faster.

The probe is a linear probe on one layer's query token (`--probe-layer`), the shape the
session's probe has; its weights are random, since scoring costs the same whatever they
are.

With `--engine vllm`, instead: the vLLM engine beside the transformers engine on one
sampled workload (K=4 samples per arithmetic prompt, T=0.8, 48 new tokens, no capture),
generated tokens/s of each, and the cost of the transformers prefill pass that gives the
vLLM engine its probe features, as a share of its generation time: every layer (what
`capture=True` adds, the states the refit reads) and up to a probe's layer; all four
interleaved in one loop.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from engines import load_model
from engines.base import Closeable, SamplingParams
from engines.hf import HFEngine
from probes.artifact import Probe, ProbeCard, SplitInfo
from probes.calibration import Calibrator
from probes.features import FeatureSpec
from probes.runtime import RiskScorer
from tasks import get_task

COMPARISONS = ("batch", "capture", "decoder", "sampled", "prefill")
Row = tuple[str, str]


def interleaved_medians(fns: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function over `repeats` rounds, run in alternation, the
    order reversed every other round, so that load from other processes on this shared
    machine (and any drift) falls on all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for repeat in range(repeats):
        order = list(zip(fns, times, strict=True))
        for fn, bucket in order if repeat % 2 == 0 else reversed(order):
            started = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - started)
    return [statistics.median(bucket) for bucket in times]


def time_ratio(slow_name: str, slow_s: float, fast_name: str, fast_s: float) -> str:
    """`slow / fast` time, both times named, and which side is faster.

    >>> time_ratio("generate", 6.91, "decoder", 5.47)
    'generate 6.91 s / decoder 5.47 s = 1.26x (decoder faster)'
    >>> time_ratio("generate", 5.47, "decoder", 6.91)
    'generate 5.47 s / decoder 6.91 s = 0.79x (decoder slower)'
    """
    ratio = slow_s / fast_s
    verdict = "faster" if ratio > 1 else "slower" if ratio < 1 else "as fast"
    return f"{slow_name} {slow_s:.2f} s / {fast_name} {fast_s:.2f} s = {ratio:.2f}x ({fast_name} {verdict})"


def overhead(with_s: float, without_s: float) -> str:
    """The time `with` something over the time without it.

    >>> overhead(5.69, 5.47)
    'with 5.69 s vs without 5.47 s = +4.0%'
    """
    return (
        f"with {with_s:.2f} s vs without {without_s:.2f} s = {(with_s / without_s - 1) * 100:+.1f}%"
    )


def cost_probe(engine: HFEngine, layer: int) -> RiskScorer:
    """A linear probe on `layer`'s query token of this model, random weights (scoring
    costs the same whatever they are), as `generate`'s `risk_fn` runs a session's probe."""
    width = int(engine.model.config.hidden_size)
    spec = FeatureSpec("query_token", (layer,))
    weights = {
        "scaler.mean": np.zeros(width),
        "scaler.scale": np.ones(width),
        "linear.weight": np.random.default_rng(0).normal(size=width),  # (H,)
        "linear.bias": np.zeros(1),
    }
    card = ProbeCard(
        model_name=engine.name,
        fingerprint=engine.fingerprint,
        template_hash="benchmark",
        feature=spec.name,
        layers=list(spec.layers),
        feature_kind=spec.kind,
        input_dim=width,
        estimator="logreg",
        task="benchmark",
        split=SplitInfo(seed=0, fractions=(0.6, 0.2, 0.2), sizes={}),
        calibration=Calibrator().to_json(),
    )
    return RiskScorer(Probe(card, weights))


def measure(engine: HFEngine, args: argparse.Namespace, only: Sequence[str]) -> list[Row]:
    """The table rows of the comparisons in `only`, each from its own interleaved loop."""
    prompts = [item.prompt for item in get_task("capitals").items]
    batch, tokens = prompts[: args.batch], args.new_tokens
    greedy = SamplingParams(max_new_tokens=tokens)
    rows: list[Row] = []

    def batched() -> object:
        return engine.generate(batch, greedy, capture=False)

    batched()  # warm-up
    if "batch" in only:

        def loop() -> object:
            return [engine.generate([p], greedy, capture=False) for p in batch]

        t_batched, t_loop = interleaved_medians([batched, loop], args.repeats)
        rows += [
            ("batched generation", f"{len(batch) / t_batched:.2f} prompts/s ({t_batched:.2f} s)"),
            ("per-prompt loop", f"{len(batch) / t_loop:.2f} prompts/s ({t_loop:.2f} s)"),
            (
                "batched / loop speed-up (target >= 4x)",
                time_ratio("loop", t_loop, "batched", t_batched),
            ),
        ]
    if "capture" in only:
        scorer = cost_probe(engine, args.probe_layer)

        def probed() -> object:  # what a session's generation does with a probe
            return engine.generate(batch, greedy, capture=True, risk_fn=scorer)

        t_plain, t_probed = interleaved_medians([batched, probed], args.repeats)
        rows.append(
            (
                "the probe inside generation: prefill capture and probe scoring vs the same "
                "generation without either (target <= 5%)",
                overhead(t_probed, t_plain),
            )
        )
    if "decoder" in only:
        encoded = engine._encode(batch)

        def raw_hf() -> object:  # no hooks at all: transformers' own generate
            with torch.inference_mode():
                return engine.model.generate(
                    **encoded,
                    do_sample=False,
                    max_new_tokens=tokens,
                    pad_token_id=engine.tokenizer.pad_token_id,
                )

        t_raw, t_decoder = interleaved_medians([raw_hf, batched], args.repeats)
        rows.append(
            (
                "greedy batch: transformers' `generate` / the engine's decoder",
                time_ratio("generate", t_raw, "decoder", t_decoder),
            )
        )
    if "sampled" in only:
        rows.append(sampled_row(engine, args))
    if "prefill" in only:
        rows.append(prefill_row(engine, (prompts * 4)[: args.prefill_prompts], args.repeats))
    return rows


def sampled_row(engine: HFEngine, args: argparse.Namespace) -> Row:
    """K=4 samples of 96 tokens per arithmetic prompt: `generate` / the decoder."""
    train = get_task("arithmetic").split("train", seed=0)
    sums = [i.prompt for i in train[: args.sample_prompts]]
    encoded = engine._encode(sums)

    def ours() -> object:
        return engine.generate(
            sums, SamplingParams(n=4, temperature=0.7, top_p=0.95, max_new_tokens=96)
        )

    def hf() -> object:
        with torch.inference_mode():
            return engine.model.generate(
                **encoded,
                do_sample=True,
                temperature=0.7,
                top_p=0.95,
                top_k=None,
                num_return_sequences=4,
                max_new_tokens=96,
                pad_token_id=engine.tokenizer.pad_token_id,
            )

    t_hf, t_ours = interleaved_medians([hf, ours], args.repeats)
    return (
        f"sampled, {len(sums)} sums x 4 samples x 96 tokens: transformers' `generate` / "
        "the engine's decoder",
        time_ratio("generate", t_hf, "decoder", t_ours),
    )


def prefill_row(engine: HFEngine, prompts: Sequence[str], repeats: int) -> Row:
    """Prefill-only extraction against a full forward that computes every logit."""

    def prefill_only() -> object:
        return engine.hidden_states(prompts)

    def full_forward() -> object:
        with torch.inference_mode():
            for start in range(0, len(prompts), engine.batch_size):
                inputs = engine._encode(prompts[start : start + engine.batch_size])
                engine.model(**inputs, output_hidden_states=True)  # logits at every position
        return None

    t_prefill, t_full = interleaved_medians([prefill_only, full_forward], repeats)
    return (
        f"prefill-only extraction vs a full forward with all logits, {len(prompts)} prompts "
        "(target >= 1.25x)",
        time_ratio("full forward", t_full, "prefill-only", t_prefill),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument(
        "--only", nargs="+", choices=COMPARISONS, default=list(COMPARISONS), help="comparisons"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prefill-prompts", type=int, default=128)
    parser.add_argument("--sample-prompts", type=int, default=16)
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--vllm-prompts", type=int, default=32)
    parser.add_argument("--probe-layer", type=int, default=15, help="the probe's layer")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    if args.engine == "vllm":
        compare_vllm(args)
        return

    engine = load_model(args.model)
    engine.batch_size = args.batch
    print(
        f"model={engine.name} threads={torch.get_num_threads()} batch={args.batch} "
        f"new_tokens={args.new_tokens} repeats={args.repeats} (medians of interleaved rounds)"
    )
    print("| measure | value |\n|---|---|")
    for name, value in measure(engine, args, args.only):
        print(f"| {name} | {value} |")


def compare_vllm(args: argparse.Namespace) -> None:
    """vLLM vs transformers tokens/s on one sampled workload, and the prefill pass's share."""
    from engines.factory import load_engine

    started = time.perf_counter()
    vllm_engine = load_engine(args.model, "vllm")
    load_seconds = time.perf_counter() - started
    hf_engine = vllm_engine.prefill  # type: ignore[attr-defined]  # same weights, transformers
    hf_engine.batch_size = args.batch
    prompts = [i.prompt for i in get_task("arithmetic").split("train", seed=0)]
    prompts = prompts[: args.vllm_prompts]
    params = SamplingParams(n=4, temperature=0.8, max_new_tokens=48)
    tokens: dict[str, int] = {}

    def run(name: str, engine: object) -> Callable[[], object]:
        def generate() -> object:
            generations = engine.generate(prompts, params, capture=False)  # type: ignore[attr-defined]
            tokens[name] = sum(len(s.token_ids) for g in generations for s in g.samples)
            return generations

        return generate

    def prefill_all() -> object:
        return hf_engine.hidden_states(prompts)

    def prefill_to_probe() -> object:
        return hf_engine.hidden_states(prompts, until_layer=args.probe_layer)

    run("vllm", vllm_engine)()  # warm-up
    t_vllm, t_hf, t_all, t_probe = interleaved_medians(  # one loop: every ratio below
        [run("vllm", vllm_engine), run("hf", hf_engine), prefill_all, prefill_to_probe],
        args.repeats,
    )
    print(
        f"threads={torch.get_num_threads()} prompts={len(prompts)} x 4 samples, T=0.8, "
        f"48 new tokens, repeats={args.repeats}; vLLM load {load_seconds:.0f} s"
    )
    rows = [
        ("vLLM engine: tokens/s", f"{tokens['vllm'] / t_vllm:.1f} ({t_vllm:.1f} s)"),
        ("transformers engine: tokens/s", f"{tokens['hf'] / t_hf:.1f} ({t_hf:.1f} s)"),
        ("vLLM / transformers", f"{(tokens['vllm'] / t_vllm) / (tokens['hf'] / t_hf):.2f}x"),
        (
            "prefill pass, every layer / vLLM generation",
            f"{t_all:.2f} s / {t_vllm:.1f} s = {t_all / t_vllm:.1%}",
        ),
        (
            f"prefill pass to layer {args.probe_layer} / vLLM generation",
            f"{t_probe:.2f} s / {t_vllm:.1f} s = {t_probe / t_vllm:.1%}",
        ),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if isinstance(vllm_engine, Closeable):
        vllm_engine.close()


if __name__ == "__main__":
    main()
