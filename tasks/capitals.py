"""`capitals`: country -> capital, built from the PyPI package `countryinfo`."""

from __future__ import annotations

from tasks.base import Item, Task
from tasks.verifiers import alias_match


def country_capitals() -> list[tuple[str, str]]:
    """(country, capital) pairs, sorted by country, countries without a capital dropped."""
    from countryinfo import all_countries

    pairs = []
    for country in all_countries():
        try:
            name, capital = country.name(), country.capital()
        except Exception:  # a record without the field
            continue
        if isinstance(capital, list):
            capital = capital[0] if capital else None
        if name and capital:
            pairs.append((name.strip(), capital.strip()))
    return sorted(set(pairs))


def build_capitals_task() -> Task:
    pairs = country_capitals()
    items = tuple(
        Item(
            id=f"capital-{index:03d}",
            prompt=f"What is the capital of {country}?",
            answers=(capital,),
            group=country,
        )
        for index, (country, capital) in enumerate(pairs)
    )
    by_country = {country.lower(): (country, capital) for country, capital in pairs}
    return Task(
        name="capitals",
        items=items,
        verifier=alias_match,
        verifier_name="alias",
        description=f"{len(items)} countries: name the capital (countryinfo)",
        max_new_tokens=48,
        oracle=lambda prompt: label_capital_prompt(prompt, by_country),
    )


def label_capital_prompt(prompt: str, by_country: dict[str, tuple[str, str]]) -> Item | None:
    """Label "What is the capital of X?" for a known country X, else None.

    >>> table = {"peru": ("Peru", "Lima")}
    >>> label_capital_prompt("What is the capital of Peru?", table).answers
    ('Lima',)
    >>> label_capital_prompt("What is the capital of Atlantis?", table) is None
    True
    """
    prefix = "what is the capital of "
    text = prompt.strip()
    if not text.lower().startswith(prefix) or not text.endswith("?"):
        return None
    found = by_country.get(text[len(prefix) : -1].strip().lower())
    if found is None:
        return None
    country, capital = found
    return Item(id=f"oracle-{country}", prompt=text, answers=(capital,), group=country)
