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
    items = tuple(
        Item(
            id=f"capital-{index:03d}",
            prompt=f"What is the capital of {country}?",
            answers=(capital,),
            group=country,
        )
        for index, (country, capital) in enumerate(country_capitals())
    )
    return Task(
        name="capitals",
        items=items,
        verifier=alias_match,
        verifier_name="alias",
        description=f"{len(items)} countries: name the capital (countryinfo)",
        max_new_tokens=48,
    )
