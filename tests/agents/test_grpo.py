"""GRPO on the groups acquire sampled: group building, equal-reward groups dropped, the
rollout's contract with TRL, and one GRPOTrainer step on a tiny model (contract test)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.acquire import Attempt
from agents.grpo import (
    Group,
    GRPOSettings,
    groups_from_attempts,
    grpo_trainer,
    informative_groups,
    prompt_token_ids,
    rollout,
    train_grpo,
)
from agents.optimize import OptimizePolicy, TrainSettings, train_version
from engines.base import Sample
from tasks.base import Item, Task
from tests.tiny_models import tiny_engine, tiny_llama, tiny_tokenizer

PROMPT = "What is 12 + 35?"


def completion(tokenizer: Any, text: str) -> tuple[int, ...]:
    """A completion as the engine returns one: its tokens and the end token."""
    return (*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id)


def group(tokenizer: Any, prompt: str, texts: Sequence[str], rewards: Sequence[float]) -> Group:
    return Group(
        prompt,
        tuple(prompt_token_ids(tokenizer, prompt)),
        tuple(completion(tokenizer, t) for t in texts),
        tuple(rewards),
        tuple(texts),
    )


def settings(**chosen: Any) -> TrainSettings:
    policy = OptimizePolicy(method="grpo", max_learning_rate=1.0)
    return TrainSettings.from_policy(policy, seed=0, **chosen)


@torch.no_grad()
def logprob(model: Any, prompt_ids: Sequence[int], ids: Sequence[int], temperature: float) -> float:
    """log p(completion | prompt) at the trainer's temperature."""
    tokens = torch.tensor([[*prompt_ids, *ids]])
    logits = model(tokens).logits[0, len(prompt_ids) - 1 : -1] / temperature  # (C, V)
    picked = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids).unsqueeze(1))
    return float(picked.sum())


def test_equal_reward_groups_dropped() -> None:
    tokenizer = tiny_tokenizer()
    groups = [
        group(tokenizer, "q1", ["47", "12"], [1.0, 0.0]),
        group(tokenizer, "q2", ["47", "12"], [0.0, 0.0]),  # all wrong: no advantage
        group(tokenizer, "q3", ["47", "12"], [-1.0, -1.0]),
        group(tokenizer, "q4", ["47", "12", "No."], [0.0, -1.0, -1.0]),
        group(tokenizer, "q1", ["12", "47"], [0.0, 1.0]),  # q1 again: a prompt names one group
    ]
    split = informative_groups(groups)
    assert [g.prompt for g in split.kept] == ["q1", "q4"]
    assert (split.equal_rewards, split.repeated) == (2, 1)
    assert split.zero_std_share == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="2 of 2 had equal rewards"):
        train_grpo(
            tiny_llama(tokenizer),
            tokenizer,
            groups[1:3],
            settings=settings(),
            grpo=GRPOSettings(temperature=0.8),
            version_dir=Path("unused"),
        )


def test_prompt_ids_are_the_engines() -> None:
    engine = tiny_engine()
    fed = engine._encode([PROMPT])["input_ids"][0].tolist()
    assert prompt_token_ids(engine.tokenizer, PROMPT) == fed


def test_groups_from_attempts() -> None:
    tokenizer = tiny_tokenizer()
    item = Item("a", PROMPT, ("47",), "a")
    task = Task("toy", (item,), lambda answer, refs: answer.strip() in refs, "toy-exact")
    texts = ["47", "I don't know.", "12"]
    samples = tuple(Sample(t, list(completion(tokenizer, t)), [0.0], [0.0], "stop") for t in texts)
    [built] = groups_from_attempts(
        task, [Attempt(item, samples, risk=0.3)], tokenizer, reward="truthfulness"
    )
    assert built.rewards == (1.0, 0.0, -1.0)
    assert built.completions[1] == tuple(samples[1].token_ids)
    assert built.prompt_ids == tuple(prompt_token_ids(tokenizer, PROMPT))
    assert built.item_id == "a" and built.texts == tuple(texts)
    [binary] = groups_from_attempts(
        task, [Attempt(item, samples, risk=0.3)], tokenizer, reward="verifier"
    )
    assert binary.rewards == (1.0, 0.0, 0.0)


def test_rollout_contract() -> None:
    """Each prompt K times in a row (TRL 1.16's sampler) -> the group's K completions."""
    tokenizer = tiny_tokenizer()
    a = group(tokenizer, "a", ["47", "12"], [1.0, 0.0])
    b = group(tokenizer, "b", ["No.", "Yes."], [0.0, 1.0])
    out = rollout([a, b])(["b", "b", "a", "a"], None)
    assert out["logprobs"] is None
    assert out["prompt_ids"] == [list(b.prompt_ids)] * 2 + [list(a.prompt_ids)] * 2
    assert out["completion_ids"] == [list(c) for c in b.completions + a.completions]
    assert out["reward"] == [0.0, 1.0, 1.0, 0.0]
    with pytest.raises(RuntimeError, match="contract has changed"):
        rollout([a, b])(["a", "b"], None)  # prompts without repetition, as TRL's docstring says


def test_grpo_settings_and_methods() -> None:
    policy = OptimizePolicy(method="grpo", grpo_reward="truthfulness")
    grpo = GRPOSettings.from_policy(policy, temperature=0.8)
    assert (grpo.reward, grpo.scale_rewards, grpo.temperature) == ("truthfulness", "batch", 0.8)
    with pytest.raises(ValueError, match=r"acquire\.temperature"):
        GRPOSettings(temperature=0.0)
    with pytest.raises(ValueError, match=r"agents\.grpo\.train_grpo"):
        train_version(
            None,
            None,
            sft=[],
            pairs=[],
            settings=TrainSettings.from_policy(policy, seed=0),
            version_dir=Path("/nonexistent/v1"),
        )


def test_one_grpo_step_moves_rewarded_up_and_penalised_down(tmp_path: Path) -> None:
    """Contract with TRL 1.16: one GRPOTrainer step through `rollout_func` on a tiny model,
    no generation; the saved version raises the rewarded completion's logprob and lowers
    the penalised one's, and the LoRA weights moved."""
    tokenizer = tiny_tokenizer()
    initial = tiny_llama(tokenizer)
    trained = copy.deepcopy(initial)

    def no_generation(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("TRL generated: the rollout must hand it acquire's samples")

    trained.generate = no_generation  # type: ignore[method-assign,misc,assignment]
    texts, rewards = ["47", "Paris", "12 + 35", "No."], [1.0, -1.0, 0.0, 0.0]
    informative = group(tokenizer, PROMPT, texts, rewards)
    flat = group(tokenizer, "What is the capital of France?", texts[:2] * 2, [-1.0] * 4)
    temperature = 0.8
    steps: list[tuple[int, int, float | None]] = []
    result = train_grpo(
        trained,
        tokenizer,
        [informative, flat],
        settings=settings(learning_rate=1e-3, batch_size=4, lora_r=8),
        grpo=GRPOSettings(temperature=temperature, reward="truthfulness"),
        version_dir=tmp_path / "v1",
        on_step=lambda *step: steps.append(step),
    )

    assert (result.steps, result.groups, result.equal_rewards, result.examples) == (1, 1, 1, 4)
    assert steps == [(1, 1, result.final_loss)]
    [log] = result.step_logs
    assert log["reward"] == pytest.approx(0.0) and log["frac_reward_zero_std"] == 0.0
    assert {"entropy", "clip_ratio/region_mean", "completions/mean_length"} <= set(log)
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    adapter = load_file(tmp_path / "v1" / "adapter" / "adapter_model.safetensors")
    assert any(("lora_B" in k) and v.abs().max() > 0 for k, v in adapter.items())
    merged = LlamaForCausalLM.from_pretrained(tmp_path / "v1" / "merged", dtype=torch.float32)
    before = [
        logprob(initial, informative.prompt_ids, c, temperature) for c in informative.completions
    ]
    after = [
        logprob(merged, informative.prompt_ids, c, temperature) for c in informative.completions
    ]
    # measured: +0.31 and -1.55 nats (lr 1e-3; at 1e-2 Adam's first step lowers all four)
    assert after[0] > before[0] + 0.1, (before, after)  # rewarded (+1) rose
    assert after[1] < before[1] - 0.5, (before, after)  # penalised (-1) fell


def test_scaling_keeps_an_abstentions_half_credit(tmp_path: Path) -> None:
    """Why grpo_scale_rewards defaults to batch (TRL's own advantages, one step): with
    per-group scaling an abstention among wrong answers ([0,-1,-1,-1]) gets what a right
    answer gets in [1,-1,-1,-1]; with one std for the batch, half of it, as the reward says."""
    tokenizer = tiny_tokenizer()
    texts = ["47", "Paris", "12 + 35", "No."]
    groups = [
        group(tokenizer, "q1", texts, [1.0, -1.0, -1.0, -1.0]),
        group(tokenizer, "q2", texts, [0.0, -1.0, -1.0, -1.0]),
    ]
    top: dict[str, dict[float, float]] = {}
    for scale in ("group", "batch"):
        trainer = grpo_trainer(
            tiny_llama(tokenizer),
            tokenizer,
            groups,
            settings(max_steps=1),
            GRPOSettings(temperature=1.0, reward="truthfulness", scale_rewards=scale),  # type: ignore[arg-type]
            tmp_path / scale,
        )
        trainer.train()
        logged = zip(
            trainer._logs["rewards"]["truthfulness"], trainer._logs["advantages"], strict=True
        )
        top[scale] = {reward: advantage for reward, advantage in logged if reward >= 0}
    # TRL divides by std + 1e-4: equal up to that
    assert top["group"][0.0] == pytest.approx(top["group"][1.0], rel=1e-3)
    assert top["batch"][0.0] == pytest.approx(top["batch"][1.0] / 2, rel=1e-3)
