"""Engine benchmark on the default model: batching, capture overhead, prefill-only cost,
and the engine's decoder against transformers' own `generate`.

    python -m benchmarks.engine [--repeats 3]
    python -m benchmarks.engine --engine vllm [--vllm-prompts 32]   (with .venv-vllm/bin/python)

Prints medians measured in this one run, and the ratios the foundation issue targets:
batched generation >= 4x a per-prompt loop (batch 32); hidden-state capture during
generation <= 5% over the same generation without it; prefill-only extraction >= 1.25x a
full forward that computes every position's vocabulary logits. Beside them: the decoder
(finished rows leave the batch, one prefill per prompt) against `model.generate`, greedy
on capitals and sampled (4 samples, 96 new tokens) on arithmetic, where answers vary most
in length.

With `--engine vllm`, instead: the vLLM engine beside the transformers engine on one
sampled workload (K=4 samples per arithmetic prompt, T=0.8, 48 new tokens, no capture),
generated tokens/s of each, and the cost of the transformers prefill pass that gives the
vLLM engine its probe features, as a share of its generation time: every layer (what
`capture=True` adds, the states the refit reads) and up to a probe's layer.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from engines import load_model
from tasks import get_task


def interleaved_medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function, run in alternation so that load from other
    processes on this shared machine falls on all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            started = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - started)
    return [statistics.median(bucket) for bucket in times]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prefill-prompts", type=int, default=128)
    parser.add_argument("--sample-prompts", type=int, default=16)
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--vllm-prompts", type=int, default=32)
    parser.add_argument("--probe-layer", type=int, default=15, help="the probe's layer")
    args = parser.parse_args()
    if args.engine == "vllm":
        compare_vllm(args)
        return

    engine = load_model("smollm2-135m-instruct")
    engine.batch_size = args.batch
    prompts = [item.prompt for item in get_task("capitals").items]
    batch = prompts[: args.batch]
    tokens = args.new_tokens
    print(
        f"threads={torch.get_num_threads()} batch={args.batch} "
        f"new_tokens={tokens} repeats={args.repeats}"
    )

    def batched() -> object:
        return engine.generate(batch, max_new_tokens=tokens, capture=False)

    def loop() -> object:
        return [engine.generate([p], max_new_tokens=tokens, capture=False) for p in batch]

    def captured() -> object:
        return engine.generate(batch, max_new_tokens=tokens, capture=True)

    encoded = engine._encode(batch)

    def raw_hf() -> object:  # no hooks at all: transformers' own generate
        with torch.inference_mode():
            return engine.model.generate(
                **encoded,
                do_sample=False,
                max_new_tokens=tokens,
                pad_token_id=engine.tokenizer.pad_token_id,
            )

    sums = [i.prompt for i in get_task("arithmetic").split("train", seed=0)[: args.sample_prompts]]
    sums_encoded = engine._encode(sums)

    def sampled_ours() -> object:
        return engine.generate(sums, n=4, temperature=0.7, top_p=0.95, max_new_tokens=96)

    def sampled_hf() -> object:
        with torch.inference_mode():
            return engine.model.generate(
                **sums_encoded,
                do_sample=True,
                temperature=0.7,
                top_p=0.95,
                top_k=None,
                num_return_sequences=4,
                max_new_tokens=96,
                pad_token_id=engine.tokenizer.pad_token_id,
            )

    prefill_prompts = (prompts * 4)[: args.prefill_prompts]

    def prefill_only() -> object:
        return engine.hidden_states(prefill_prompts)

    def full_forward() -> object:
        with torch.inference_mode():
            for start in range(0, len(prefill_prompts), engine.batch_size):
                inputs = engine._encode(prefill_prompts[start : start + engine.batch_size])
                engine.model(**inputs, output_hidden_states=True)  # logits at every position
        return None

    batched()  # warm-up
    t_batched, t_loop = interleaved_medians([batched, loop], max(1, args.repeats - 2))
    t_plain, t_captured = interleaved_medians([batched, captured], args.repeats)
    t_raw = interleaved_medians([raw_hf], args.repeats)[0]
    t_sampled_hf, t_sampled = interleaved_medians([sampled_hf, sampled_ours], args.repeats)
    t_prefill, t_full = interleaved_medians([prefill_only, full_forward], args.repeats)

    rows = [
        ("batched generation (prompts/s)", f"{len(batch) / t_batched:.2f}"),
        ("per-prompt loop (prompts/s)", f"{len(batch) / t_loop:.2f}"),
        ("batched / loop speed-up (target >= 4x)", f"{t_loop / t_batched:.2f}x"),
        ("generate without capture (s)", f"{t_plain:.2f}"),
        ("generate with prefill capture (s)", f"{t_captured:.2f}"),
        ("capture overhead (target <= 5%)", f"{(t_captured / t_plain - 1) * 100:+.1f}%"),
        ("transformers' generate, same greedy batch (s)", f"{t_raw:.2f}"),
        ("decoder vs transformers' generate, greedy", f"{t_raw / t_plain:.2f}x"),
        (
            f"sampled: {len(sums)} sums x 4 samples x 96 tokens, ours / transformers' (s)",
            f"{t_sampled:.2f} / {t_sampled_hf:.2f} = {t_sampled_hf / t_sampled:.2f}x",
        ),
        (f"prefill-only extraction, {len(prefill_prompts)} prompts (s)", f"{t_prefill:.2f}"),
        ("full forward with all logits (s)", f"{t_full:.2f}"),
        ("prefill-only speed-up (target >= 1.25x)", f"{t_full / t_prefill:.2f}x"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def compare_vllm(args: argparse.Namespace) -> None:
    """vLLM vs transformers tokens/s on one sampled workload, and the prefill pass's share."""
    from engines.factory import load_engine

    started = time.perf_counter()
    vllm_engine = load_engine("smollm2-135m-instruct", "vllm")
    load_seconds = time.perf_counter() - started
    hf_engine = vllm_engine.prefill  # type: ignore[attr-defined]  # same weights, transformers
    hf_engine.batch_size = args.batch
    prompts = [i.prompt for i in get_task("arithmetic").split("train", seed=0)]
    prompts = prompts[: args.vllm_prompts]
    options: dict = {"n": 4, "temperature": 0.8, "max_new_tokens": 48, "capture": False}
    tokens: dict[str, int] = {}

    def run(name: str, engine: object) -> Callable[[], object]:
        def generate() -> object:
            generations = engine.generate(prompts, **options)  # type: ignore[attr-defined]
            tokens[name] = sum(len(s.token_ids) for g in generations for s in g.samples)
            return generations

        return generate

    def prefill_all() -> object:
        return hf_engine.hidden_states(prompts)

    def prefill_to_probe() -> object:
        return hf_engine.hidden_states(prompts, until_layer=args.probe_layer)

    run("vllm", vllm_engine)()  # warm-up
    t_vllm, t_hf = interleaved_medians(
        [run("vllm", vllm_engine), run("hf", hf_engine)], args.repeats
    )
    t_all, t_probe = interleaved_medians([prefill_all, prefill_to_probe], args.repeats)
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
    vllm_engine.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
