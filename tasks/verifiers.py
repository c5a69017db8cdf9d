"""Verifiers: pure functions `(answer, references) -> bool`, named in `VERIFIERS`."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize(text: str) -> str:
    """Lowercase, strip accents and punctuation, collapse whitespace.

    >>> normalize("  Bogotá, D.C.!  ")
    'bogota d c'
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def exact_match(answer: str, references: Sequence[str]) -> bool:
    """Normalized equality with any reference.

    >>> exact_match("Paris.", ["paris"])
    True
    >>> exact_match("The capital is Paris", ["Paris"])
    False
    """
    normalized = normalize(answer)
    return any(normalized == normalize(ref) for ref in references)


def alias_match(answer: str, references: Sequence[str]) -> bool:
    """Any reference (or alias) appears as whole words in the answer.

    >>> alias_match("The capital of France is Paris.", ["Paris"])
    True
    >>> alias_match("It is Parisville", ["Paris"])
    False
    >>> alias_match("", ["Paris"])
    False
    """
    padded = f" {normalize(answer)} "
    return any(normalize(ref) and f" {normalize(ref)} " in padded for ref in references)


def final_number(text: str) -> float | None:
    """The answer's number: the first after the last '=', else the last one in the text.

    >>> final_number("12 + 35 = 47. The sum of 12 and 35 is")
    47.0
    >>> final_number("So the answer is 1,204.")
    1204.0
    >>> final_number("no digits") is None
    True
    """
    if "=" in text:
        head, tail = text.rsplit("=", 1)
        after = _NUMBER.findall(tail)
        return _to_float(after[0]) if after else final_number(head)
    found = _NUMBER.findall(text)
    return _to_float(found[-1]) if found else None


def _to_float(number: str) -> float | None:
    try:
        return float(number.replace(",", ""))
    except ValueError:
        return None


def numeric_match(answer: str, references: Sequence[str]) -> bool:
    """The answer's final number equals a reference number (to 1e-6).

    >>> numeric_match("23 + 45 = 68", ["68"])
    True
    >>> numeric_match("The result is 67", ["68"])
    False
    """
    value = final_number(answer)
    if value is None:
        return False
    for ref in references:
        expected = final_number(ref)
        if expected is not None and abs(value - expected) <= 1e-6:
            return True
    return False


def yes_no_match(answer: str, references: Sequence[str]) -> bool:
    """The answer's first word is the reference's yes or no.

    >>> yes_no_match("Yes, there is a red circle.", ["yes"])
    True
    >>> yes_no_match("No.", ["yes"])
    False
    """
    words = normalize(answer).split()
    return bool(words) and any(words[0] == normalize(ref) for ref in references)


def yes_or_no(answer: str) -> str | None:
    """The first standalone "yes" or "no" of an answer (POPE's reading), else None.

    >>> yes_or_no("Yes, there is a red circle.")
    'yes'
    >>> yes_or_no("There is no red circle in the image.")
    'no'
    >>> yes_or_no("Nothing red; I cannot tell.") is None
    True
    """
    match = re.search(r"\b(yes|no)\b", normalize(answer))
    return match.group(1) if match else None


def pope_match(answer: str, references: Sequence[str]) -> bool:
    """The answer's yes/no (see `yes_or_no`) equals the reference's.

    >>> pope_match("No.", ["no"])
    True
    >>> pope_match("Yes there is", ["no"])
    False
    >>> pope_match("I am not sure", ["no"])
    False
    """
    said = yes_or_no(answer)
    return said is not None and any(said == yes_or_no(ref) for ref in references)


VERIFIERS: dict[str, Callable[[str, Sequence[str]], bool]] = {
    "exact": exact_match,
    "alias": alias_match,
    "numeric": numeric_match,
    "yes_no": yes_no_match,
    "pope": pope_match,
}
