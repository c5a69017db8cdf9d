"""Post-generation baselines for the probe, each a risk score (higher = more likely wrong).

All need the answer generated first (one greedy decode, or K samples for self-consistency),
which is what the pre-generation probe avoids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence

from engines.base import Sample


def logprob_risk(sample: Sample) -> float:
    """Negative mean token log-probability of the answer.

    >>> logprob_risk(Sample("Paris", [1, 2], [-0.5, -1.5], [0.1, 0.2], "stop"))
    1.0
    """
    return -sample.mean_logprob


def entropy_risk(sample: Sample) -> float:
    """Mean next-token entropy (nats) over the answer's tokens.

    >>> entropy_risk(Sample("Paris", [1, 2], [-0.5, -1.5], [0.25, 0.75], "stop"))
    0.5
    """
    return sample.mean_entropy


def disagreement_risk(answers: Sequence[str], key: Callable[[str], Hashable] = str.strip) -> float:
    """Self-consistency disagreement: 1 - (share of the most common answer key). Keys
    should read the answer the way the task's verifier does (`Task.answer_key`): whole
    free-form sentences rarely repeat, so by their text every item looks unsure.

    >>> disagreement_risk(["Paris", "paris", "Lyon", "Paris"], str.lower)
    0.25
    >>> disagreement_risk(["a", "b", "c", "d"])
    0.75
    """
    if not answers:
        raise ValueError("self-consistency needs at least one sampled answer")
    counts = Counter(key(answer) for answer in answers)
    return 1.0 - counts.most_common(1)[0][1] / len(answers)


SAMPLE_BASELINES: dict[str, Callable[[Sample], float]] = {
    "mean_logprob": logprob_risk,
    "mean_entropy": entropy_risk,
}
