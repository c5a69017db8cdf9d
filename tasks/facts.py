"""`facts`: several attributes per country (countryinfo), grouped by country.

Every item's group is the country's name exactly as the `capitals` task spells it, so the
same seeded split puts a country's facts and its capital question in the same split: a
probe trained on the facts of train countries never sees a test country.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from tasks.base import Item, Task, TaskError
from tasks.verifiers import alias_match

# ISO 639-1 (and the few other) codes countryinfo lists, as English names.
LANGUAGE_NAMES: dict[str, str] = {
    "af": "Afrikaans",
    "am": "Amharic",
    "ar": "Arabic",
    "az": "Azerbaijani",
    "be": "Belarusian",
    "bg": "Bulgarian",
    "bi": "Bislama",
    "bn": "Bengali",
    "bs": "Bosnian",
    "ca": "Catalan",
    "cnr": "Montenegrin",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "dv": "Dhivehi",
    "dz": "Dzongkha",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fa": "Persian",
    "fi": "Finnish",
    "fo": "Faroese",
    "fr": "French",
    "ga": "Irish",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "hy": "Armenian",
    "id": "Indonesian",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "ka": "Georgian",
    "kk": "Kazakh",
    "kl": "Greenlandic",
    "km": "Khmer",
    "ko": "Korean",
    "ky": "Kyrgyz",
    "la": "Latin",
    "lo": "Lao",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mk": "Macedonian",
    "mn": "Mongolian",
    "ms": "Malay",
    "mt": "Maltese",
    "my": "Burmese",
    "nb": "Norwegian",
    "ne": "Nepali",
    "nl": "Dutch",
    "nn": "Norwegian",
    "no": "Norwegian",
    "pl": "Polish",
    "ps": "Pashto",
    "pt": "Portuguese",
    "ro": "Romanian",
    "rs": "Serbian",
    "ru": "Russian",
    "rw": "Kinyarwanda",
    "si": "Sinhala",
    "sk": "Slovak",
    "sl": "Slovene",
    "sm": "Samoan",
    "so": "Somali",
    "sq": "Albanian",
    "sr": "Serbian",
    "sv": "Swedish",
    "sw": "Swahili",
    "tg": "Tajik",
    "th": "Thai",
    "ti": "Tigrinya",
    "tk": "Turkmen",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "uz": "Uzbek",
    "vi": "Vietnamese",
    "zh": "Chinese",
}

# Other accepted spellings of a language name.
LANGUAGE_ALIASES: dict[str, tuple[str, ...]] = {
    "Slovene": ("Slovenian",),
    "Dhivehi": ("Maldivian",),
    "Persian": ("Farsi",),
    "Kyrgyz": ("Kirghiz",),
    "Sinhala": ("Sinhalese",),
    "Chinese": ("Mandarin",),
    "Malay": ("Bahasa Melayu", "Malaysian"),
    "Indonesian": ("Bahasa Indonesia",),
    "Greenlandic": ("Kalaallisut",),
    "Burmese": ("Myanmar",),
}


def continent_answers(region: str, intermediate: str, subregion: str) -> tuple[str, ...]:
    """Accepted continents for countryinfo's region fields ("Americas" is split by its
    intermediate region; the Caribbean and Central America also count as North America).

    >>> continent_answers("Americas", "Caribbean", "Latin America and the Caribbean")
    ('North America', 'Caribbean')
    >>> continent_answers("Oceania", "", "Australia and New Zealand")
    ('Oceania', 'Australia')
    >>> continent_answers("", "", "")
    ()
    """
    if region == "Americas":
        return {
            "South America": ("South America",),
            "Central America": ("North America", "Central America"),
            "Caribbean": ("North America", "Caribbean"),
        }.get(intermediate, ("North America",))
    if region == "Oceania":
        return ("Oceania", "Australia") if subregion.startswith("Australia") else ("Oceania",)
    return (region,) if region in ("Africa", "Asia", "Europe") else ()


def language_answers(codes: Sequence[str]) -> tuple[str, ...]:
    """Names (and aliases) of every listed language; an entry that is already a name
    (countryinfo has a few) is kept as it is.

    >>> language_answers(["de", "fr"])
    ('German', 'French')
    >>> language_answers(["English", "Scots"])
    ('English', 'Scots')
    """
    names: list[str] = []
    for code in codes:
        name = LANGUAGE_NAMES.get(code, code if len(code) > 3 else "")
        for candidate in (name, *LANGUAGE_ALIASES.get(name, ())):
            if candidate and candidate not in names:
                names.append(candidate)
    return tuple(names)


_CODE = re.compile(r"^[A-Z]{3}$")
_PREDICATE = re.compile(r"\s(?:is|are)\s", re.IGNORECASE)
_QUOTED = re.compile(r'"([^"]+)"|\u201c([^\u201d]+)\u201d')


def answer_span(answer: str) -> str:
    """The part of an answer that states the fact: after the first "is" / "are" (the model
    repeats the question first: "The demonym for people from Hungary is ..."), and only
    the quoted phrases there when it quotes any ('"Hanykari" in Hungarian' names no demonym).

    >>> answer_span('The demonym for people from Hungary is "Hanykari" in Hungarian.')
    'Hanykari'
    >>> answer_span("The official language of Iran is Farsi.")
    'Farsi.'
    >>> answer_span("Asia")
    'Asia'
    """
    found = _PREDICATE.search(answer)
    span = answer[found.end() :] if found else answer
    quoted = [a or b for a, b in _QUOTED.findall(span)]
    return " ; ".join(quoted) if quoted else span


def facts_match(answer: str, references: Sequence[str]) -> bool:
    """`alias_match` on the answer's statement (`answer_span`); a three-letter upper-case
    code (a currency) must appear there in upper case, so that ALL is not found in "all".

    >>> facts_match("The code is ALL.", ["ALL"]), facts_match("It is all of them", ["ALL"])
    (True, False)
    >>> facts_match('People from Japan are "Kokoro" in Japanese.', ["Japanese"])
    False
    >>> facts_match("The capital of Peru is Lima.", ["Lima"])
    True
    """
    span = answer_span(answer)
    for reference in references:
        if _CODE.match(reference):
            if re.search(rf"(?<![A-Za-z]){reference}(?![A-Za-z])", span):
                return True
        elif alias_match(span, [reference]):
            return True
    return False


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [v.strip() for v in value if isinstance(v, str) and v.strip()]


# attribute -> (question template, answers from countryinfo's record)
ATTRIBUTES: dict[str, tuple[str, Callable[[dict[str, Any]], tuple[str, ...]]]] = {
    "capital": (
        "What is the capital of {country}?",
        lambda info: tuple(_texts(info.get("capital"))[:1]),
    ),
    "continent": (
        "On which continent is {country}?",
        lambda info: continent_answers(
            _text(info.get("region")),
            _text(info.get("intermediateregion")),
            _text(info.get("subregion")),
        ),
    ),
    "demonym": (
        "What is the demonym for people from {country}?",
        lambda info: tuple(
            part.strip()
            for demonym in _texts(info.get("demonym"))
            for part in re.split(r"[,/]", demonym)
            if part.strip()
        ),
    ),
    "language": (
        "Name an official language of {country}.",
        lambda info: language_answers(_texts(info.get("languages"))),
    ),
    "currency": (
        "What is the three-letter currency code of {country}?",
        lambda info: tuple(_texts(info.get("currencies"))),
    ),
}


def country_records() -> list[tuple[str, dict[str, Any]]]:
    """(name, countryinfo record) per country, sorted by name; the name is stripped like
    the capitals task's group, so the two tasks split a country alike."""
    from countryinfo import all_countries

    records: dict[str, dict[str, Any]] = {}
    for country in all_countries():
        try:
            info: dict[str, Any] = dict(country.info())
        except Exception:  # a broken record
            continue
        name = _text(info.get("name"))
        if name and name not in records:
            records[name] = info
    return sorted(records.items())


def build_facts_task(attributes: Sequence[str] | str | None = None) -> Task:
    """One question per (country, attribute) with a known answer; group = country.

    `attributes` (a list or a comma-separated string) defaults to all of `ATTRIBUTES`."""
    if isinstance(attributes, str):
        attributes = [a.strip() for a in attributes.split(",") if a.strip()]
    chosen = list(ATTRIBUTES) if attributes is None else list(attributes)
    unknown = [a for a in chosen if a not in ATTRIBUTES]
    if unknown or not chosen:
        raise TaskError(f"facts: unknown attributes {unknown}; choose from {', '.join(ATTRIBUTES)}")
    items: list[Item] = []
    records = country_records()
    for attribute in chosen:  # attribute-major: answers of one kind batch together
        template, answers_of = ATTRIBUTES[attribute]
        for index, (country, info) in enumerate(records):
            answers = answers_of(info)
            if not answers:
                continue
            items.append(
                Item(
                    id=f"fact-{attribute}-{index:03d}",
                    prompt=template.format(country=country),
                    answers=answers,
                    group=country,
                    meta={"attribute": attribute},
                )
            )
    return Task(
        name="facts",
        items=tuple(items),
        verifier=facts_match,
        verifier_name="facts",
        description=f"{len(items)} country facts ({', '.join(chosen)}; countryinfo)",
        # The model explains a continent or a language at length: at 48 tokens ~30% of
        # those answers were cut off, at 96 almost none.
        max_new_tokens=96,
    )
