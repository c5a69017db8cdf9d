"""`arithmetic`: seeded integer problems, digits and operators configurable."""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Callable

from tasks.base import Item, Task, TaskError
from tasks.verifiers import numeric_match

OPERATORS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


def build_arithmetic_task(
    n: int = 500, digits: int = 2, operators: str = "+", seed: int = 0
) -> Task:
    """`n` distinct problems `a OP b` with `digits`-digit operands.

    The group is the unordered operand pair with its operator, so `a+b` and `b+a` never
    land in different splits."""
    unknown = set(operators) - set(OPERATORS)
    if unknown or not operators:
        raise TaskError(f"arithmetic: unknown operators {sorted(unknown)}; use any of '+-*'")
    if not 1 <= digits <= 6:
        raise TaskError(f"arithmetic: digits={digits} is out of range; use 1 to 6")
    low, high = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
    capacity = (high - low + 1) ** 2 * len(operators)
    if n > capacity:
        raise TaskError(f"arithmetic: only {capacity} distinct problems with digits={digits}")
    rng = random.Random(seed)
    seen: set[tuple[int, str, int]] = set()
    items: list[Item] = []
    while len(items) < n:
        a, b, op = rng.randint(low, high), rng.randint(low, high), rng.choice(operators)
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        pair = f"{min(a, b)}{op}{max(a, b)}" if op in "+*" else f"{a}{op}{b}"
        items.append(
            Item(
                id=f"arith-{len(items):05d}",
                prompt=f"What is {a} {op} {b}?",
                answers=(str(OPERATORS[op](a, b)),),
                group=pair,
            )
        )
    return Task(
        name="arithmetic",
        items=tuple(items),
        verifier=numeric_match,
        verifier_name="numeric",
        description=f"{n} problems, {digits}-digit operands, operators {operators!r}",
        max_new_tokens=96,
        oracle=label_arithmetic_prompt,
    )


_PROBLEM = re.compile(r"^What is (-?\d+) ([-+*]) (-?\d+)\?$")


def label_arithmetic_prompt(prompt: str) -> Item | None:
    """Label a model-written problem in the task's own form, else None.

    >>> label_arithmetic_prompt("What is 12 + 30?").answers
    ('42',)
    >>> label_arithmetic_prompt("What is the meaning of life?") is None
    True
    """
    match = _PROBLEM.match(prompt.strip())
    if not match:
        return None
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    pair = f"{min(a, b)}{op}{max(a, b)}" if op in "+*" else f"{a}{op}{b}"
    return Item(
        id=f"oracle-{pair}", prompt=prompt.strip(), answers=(str(OPERATORS[op](a, b)),), group=pair
    )
