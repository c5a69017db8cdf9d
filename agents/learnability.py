"""Which train prompts to sample next, by what earlier samples showed (issue 24, item 3).

Each prompt carries a Beta posterior over its pass rate p under the current lineage of
versions:

- the prior comes from the probe's predicted risk r (pass rate 1 - r), as `strength`
  pseudo-samples; the strength scales with the probe's measured skill on fresh labels
  (AUROC above 0.5: `max_prior_strength * (2 * AUROC - 1)`), so no probe, or one at
  chance, gives the flat Beta(1, 1);
- the evidence is every sample the session drew for the prompt (right: alpha + 1, wrong:
  beta + 1), multiplied by `discount` for each version change since it was drawn (a new
  version is another model: old evidence counts less, never nothing at once).

A prompt is worth sampling when its K samples will likely disagree: GRPO's advantage and
selection's pairs need a mixed group. Expected learnability E[p (1 - p)] under the
posterior ranks the prompts (arXiv 2502.12272); Thompson sampling (one draw of p per
prompt, ranked by p (1 - p)) explores more. Near-certain solved or unsolved prompts wait
for later cycles. The posterior also predicts the share of mixed groups of K samples,
1 - E[p^K] - E[(1 - p)^K], to be recorded beside the observed share.

Everything here is pure: the caller gathers the evidence (the session's saved attempts)
and the probe's risks and skill.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Order = Literal["learnability", "thompson"]
FLAT = 1.0  # Beta(1, 1): the prior before anything is known


@dataclass(frozen=True)
class Evidence:
    """Samples drawn for one prompt by one version: how many, how many right, and how
    many version changes ago (0: the current version drew them)."""

    prompt_id: str
    right: int
    total: int
    versions_ago: int = 0


@dataclass(frozen=True)
class Posterior:
    """Beta(alpha, beta) over one prompt's pass rate."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        """E[p].

        >>> Posterior(3.0, 1.0).mean
        0.75
        """
        return self.alpha / (self.alpha + self.beta)

    @property
    def learnability(self) -> float:
        """E[p (1 - p)] = alpha beta / ((alpha + beta)(alpha + beta + 1)).

        >>> round(Posterior(1.0, 1.0).learnability, 4)  # flat: E[p - p^2] = 1/2 - 1/3
        0.1667
        """
        total = self.alpha + self.beta
        return self.alpha * self.beta / (total * (total + 1.0))

    def moment(self, k: int) -> float:
        """E[p^k] = prod_{i<k} (alpha + i) / (alpha + beta + i).

        >>> Posterior(1.0, 1.0).moment(2)  # E[p^2] under the flat prior: 1/3
        0.3333333333333333
        """
        value = 1.0
        for i in range(k):
            value *= (self.alpha + i) / (self.alpha + self.beta + i)
        return value

    def mixed_share(self, k: int) -> float:
        """Chance that k samples are neither all right nor all wrong.

        >>> round(Posterior(1.0, 1.0).mixed_share(4), 6)  # flat: 1 - 1/5 - 1/5
        0.6
        """
        if k < 2:
            return 0.0
        flipped = Posterior(self.beta, self.alpha)
        return max(0.0, 1.0 - self.moment(k) - flipped.moment(k))


def prior_strength(auroc: float | None, max_strength: float) -> float:
    """Pseudo-samples the probe's risk is worth: 0 without a measured skill or at chance,
    `max_strength` for a perfect ranker.

    >>> [prior_strength(a, 4.0) for a in (None, 0.4, 0.5, 0.75, 1.0)]
    [0.0, 0.0, 0.0, 2.0, 4.0]
    """
    if auroc is None or not math.isfinite(auroc):
        return 0.0
    return max_strength * min(max(2.0 * auroc - 1.0, 0.0), 1.0)


def prior(risk: float | None, strength: float) -> Posterior:
    """Beta(1 + s (1 - r), 1 + s r): the flat prior plus `strength` pseudo-samples at the
    probe's predicted pass rate 1 - r.

    >>> prior(0.25, 4.0)
    Posterior(alpha=4.0, beta=2.0)
    >>> prior(None, 4.0)
    Posterior(alpha=1.0, beta=1.0)
    """
    if risk is None or strength <= 0.0:
        return Posterior(FLAT, FLAT)
    return Posterior(FLAT + strength * (1.0 - risk), FLAT + strength * risk)


def posteriors(
    prompt_ids: Sequence[str],
    risks: Mapping[str, float],
    evidence: Iterable[Evidence],
    *,
    probe_auroc: float | None,
    max_prior_strength: float = 4.0,
    discount: float = 0.5,
) -> dict[str, Posterior]:
    """Each prompt's posterior: its prior from the probe's risk (when the probe scored it),
    plus its evidence, discounted by `discount ** versions_ago`.

    >>> seen = [Evidence("a", right=3, total=4), Evidence("a", right=0, total=4, versions_ago=1)]
    >>> posteriors(["a", "b"], {}, seen, probe_auroc=None)
    {'a': Posterior(alpha=4.0, beta=4.0), 'b': Posterior(alpha=1.0, beta=1.0)}
    """
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount {discount} is not in [0, 1]")
    strength = prior_strength(probe_auroc, max_prior_strength)
    result = {pid: prior(risks.get(pid), strength) for pid in prompt_ids}
    for seen in evidence:
        if seen.prompt_id not in result:
            continue
        weight = discount**seen.versions_ago
        old = result[seen.prompt_id]
        result[seen.prompt_id] = Posterior(
            old.alpha + weight * seen.right, old.beta + weight * (seen.total - seen.right)
        )
    return result


def choose(
    found: Mapping[str, Posterior], count: int, *, order: Order = "learnability", seed: int = 0
) -> list[str]:
    """The `count` prompts to sample next, best first: by expected learnability, or by
    p (1 - p) of one Thompson draw of p per prompt (seeded). Ties keep the input order.

    >>> found = {"solved": Posterior(9.0, 1.0), "mixed": Posterior(3.0, 3.0),
    ...          "unsolved": Posterior(1.0, 9.0), "new": Posterior(1.0, 1.0)}
    >>> choose(found, 2)  # Beta(3, 3) has more mass near 0.5 than the flat prior
    ['mixed', 'new']
    """
    if count <= 0:
        return []
    ids = list(found)
    if order == "thompson":
        rng = random.Random(seed)
        draws = {pid: rng.betavariate(found[pid].alpha, found[pid].beta) for pid in ids}
        score = {pid: draws[pid] * (1.0 - draws[pid]) for pid in ids}
    else:
        score = {pid: found[pid].learnability for pid in ids}
    ranked = sorted(range(len(ids)), key=lambda i: (-score[ids[i]], i))
    return [ids[i] for i in ranked[:count]]


def predicted_mixed_share(found: Mapping[str, Posterior], chosen: Sequence[str], k: int) -> float:
    """The share of the chosen prompts' groups of k samples the posterior expects mixed.

    >>> round(predicted_mixed_share({"a": Posterior(1.0, 1.0)}, ["a"], 4), 6)
    0.6
    """
    if not chosen:
        return 0.0
    return sum(found[pid].mixed_share(k) for pid in chosen) / len(chosen)


def observed_mixed_share(verdicts: Sequence[Sequence[bool]]) -> float:
    """The share of sampled groups whose verdicts are not all equal.

    >>> observed_mixed_share([[True, False], [True, True], [False, False, True]])
    0.6666666666666666
    """
    groups = [v for v in verdicts if v]
    if not groups:
        return 0.0
    return sum(len(set(v)) > 1 for v in groups) / len(groups)
