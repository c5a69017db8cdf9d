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
    return bool(_named(answer, references))


def _named(answer: str, references: Sequence[str]) -> set[str]:
    """The normalized references that occur as whole words in the answer."""
    padded = f" {normalize(answer)} "
    return {ref for ref in map(normalize, references) if ref and f" {ref} " in padded}


def mask_echoes(answer: str, question: str, references: Sequence[str]) -> str:
    """The normalized answer with every reference it names only inside words repeated from
    the question masked as `_`. A reference the question itself contains ("Bissau" in
    "Guinea-Bissau", "Luxembourg" in "capital of Luxembourg") is an echo where the answer
    has it beside the same word as the question does ("guinea bissau", "of luxembourg"), or
    as a possessive ("Luxembourg's capital is ..."); anywhere else it is the answer.

    >>> q = "What is the capital of Guinea-Bissau?"
    >>> mask_echoes("The capital of Guinea-Bissau is Portoão.", q, ["Bissau"])
    'the capital of guinea _ is portoao'
    >>> mask_echoes("Bissau is the capital of Guinea-Bissau.", q, ["Bissau"])
    'bissau is the capital of guinea _'
    >>> q = "What is the capital of Luxembourg?"
    >>> mask_echoes("The capital of Luxembourg is Luxembourg City.", q, ["Luxembourg"])
    'the capital of _ is luxembourg city'
    >>> mask_echoes("Luxembourg's capital is Brussels.", q, ["Luxembourg"])
    '_ s capital is brussels'
    >>> mask_echoes("Luxembourg.", q, ["Luxembourg"])
    'luxembourg'
    >>> q = "What is the capital of São Tomé and Príncipe?"
    >>> mask_echoes("São Tomé and Príncipe's capital is São Tomé.", q, ["São Tomé"])
    '_ _ and principe s capital is sao tome'
    >>> mask_echoes("The capital of Peru is Lima.", "What is the capital of Peru?", ["Lima"])
    'the capital of peru is lima'
    """
    words = normalize(answer).split()
    asked = normalize(question).split()
    for reference in references:
        ref = normalize(reference).split()
        beside = _neighbours(asked, ref)
        if not ref or not (beside[0] or beside[1]):
            continue  # the question does not name it: every occurrence is an answer
        for start in _occurrences(words, ref):
            if _is_echo(words, start, len(ref), beside):
                words[start : start + len(ref)] = ["_"] * len(ref)
    return " ".join(words)


def _occurrences(words: Sequence[str], phrase: Sequence[str]) -> list[int]:
    """Where `phrase` starts in `words` (whole words).

    >>> _occurrences("a b a b".split(), ["a", "b"])
    [0, 2]
    """
    n = len(phrase)
    return [i for i in range(len(words) - n + 1) if list(words[i : i + n]) == list(phrase)]


def _neighbours(words: Sequence[str], phrase: Sequence[str]) -> tuple[set[str], set[str]]:
    """The words just before and just after each occurrence of `phrase` in `words`."""
    before: set[str] = set()
    after: set[str] = set()
    for start in _occurrences(words, phrase):
        end = start + len(phrase)
        before |= {words[start - 1]} if start > 0 else {_EDGE}
        after |= {words[end]} if end < len(words) else {_EDGE}
    return before, after


_EDGE = ""  # the question's start or end: beside it nothing repeats


def _is_echo(
    words: Sequence[str], start: int, length: int, beside: tuple[set[str], set[str]]
) -> bool:
    end = start + length
    before = words[start - 1] if start > 0 else None
    after = words[end] if end < len(words) else None
    return before in beside[0] or after in beside[1] or after == "s"


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


def is_number(text: str) -> bool:
    """The whole text is one number (as `final_number` reads numbers).

    >>> [is_number(t) for t in ("32", " -1,204.5 ", "32 apples", "x")]
    [True, True, False, False]
    """
    return _NUMBER.fullmatch(text.strip()) is not None


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


AnswerKey = tuple[str, ...]
AnswerKeyFn = Callable[[str, Sequence[str]], AnswerKey]


def text_key(answer: str, references: Sequence[str] = ()) -> AnswerKey:
    """The normalized text: two answers agree only when worded alike.

    >>> text_key("Paris.") == text_key("paris")
    True
    """
    return (normalize(answer),)


def number_key(answer: str, references: Sequence[str] = ()) -> AnswerKey:
    """The answer's number (see `final_number`); every answer without one shares ''.

    >>> number_key("12 + 5 = 17.") == number_key("The sum is 17")
    True
    >>> number_key("no idea")
    ('',)
    """
    value = final_number(answer)
    return ("" if value is None else f"{value:g}",)


def alias_key(answer: str, references: Sequence[str]) -> AnswerKey:
    """Which references the answer names (whole words, as `alias_match` reads them),
    sorted; an answer naming none keys by its normalized text.

    >>> alias_key("The capital of Peru is Lima.", ["Lima"]) == alias_key("Lima, I think", ["Lima"])
    True
    >>> alias_key("It is Cusco.", ["Lima"])
    ('it is cusco',)
    """
    return tuple(sorted(_named(answer, references))) or text_key(answer)


def first_word_key(answer: str, references: Sequence[str] = ()) -> AnswerKey:
    """The answer's first word, as `yes_no_match` reads it.

    >>> first_word_key("Yes, there is.") == first_word_key("yes")
    True
    """
    return tuple(normalize(answer).split()[:1])


def yes_no_key(answer: str, references: Sequence[str] = ()) -> AnswerKey:
    """The answer's yes or no (see `yes_or_no`), else its normalized text.

    >>> yes_no_key("There is no circle.") == yes_no_key("No.")
    True
    """
    said = yes_or_no(answer)
    return text_key(answer) if said is None else (said,)


VERIFIERS: dict[str, Callable[[str, Sequence[str]], bool]] = {
    "exact": exact_match,
    "alias": alias_match,
    "numeric": numeric_match,
    "yes_no": yes_no_match,
    "pope": pope_match,
}

# Verifiers that find a reference anywhere in the answer's words: `Task.verify` hands them
# the answer with the question's echoes masked (`mask_echoes`), so that "The capital of
# Guinea-Bissau is Portoão." does not name Bissau.
ECHO_MASKED: frozenset[str] = frozenset({"alias"})

# What two answers to one item must share to count as the same vote (self-consistency),
# read the way each verifier reads an answer.
ANSWER_KEYS: dict[str, AnswerKeyFn] = {
    "exact": text_key,
    "alias": alias_key,
    "numeric": number_key,
    "yes_no": first_word_key,
    "pope": yes_no_key,
}
