"""Words likely to be misread, found before anything is rendered: roman numerals in
context, ordinals, numbers with units or separators, abbreviations, acronyms, and words the
G2P's dictionary lacks; each with a ready `narrator lexicon add` command."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from narrator.lexicon import Lexicon

# Words after which a roman numeral is a number ("Chapter XIV", "Part II").
_COUNTED = (
    "chapter book part volume vol act scene canto section appendix lesson stave letter "
    "psalm article phase round war"
)
_ROMAN = r"M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
_ROMAN_TOKEN = re.compile(rf"\b(?=[MDCLXVI])({_ROMAN})\b(?![’'-]\w)")
_WORD_BEFORE = re.compile(r"([A-Za-z][\w’'-]*)\s+$")
# "24th", "1st", "2nd", "3rd"
_ORDINAL = re.compile(r"\b\d+(?:st|nd|rd|th)\b", re.IGNORECASE)
_UNITS = (
    "km|kg|mg|g|mm|cm|m|mi|mph|kph|km/h|lb|lbs|oz|ft|yd|in|ml|l|gal|hz|khz|mhz|ghz|kb|mb|gb|"
    "tb|kw|mw|w|v|°c|°f|°"
)
# money, decades, thousands separators, decimals, percentages and units
_NUMBER = re.compile(
    r"(?:[$£€¥]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:million|billion|[mbk]n?)\b)?"
    r"|\b\d{1,3}(?:,\d{3})+(?:\.\d+)?"
    r"|\b\d+(?:\.\d+)?\s?(?:%|percent\b)"
    r"|\b\d{2,4}['’]?s\b"
    r"|\b\d+\.\d+\b"
    rf"|\b\d+(?:\.\d+)?\s?(?:{_UNITS})(?![\w])"
    r")",
    re.IGNORECASE,
)
# Abbreviations whose reading depends on context, or that G2P spells out.
_ABBREVIATIONS = {
    "no": "number",
    "nos": "numbers",
    "st": "Saint",
    "dr": "Doctor",
    "mt": "Mount",
    "ft": "Fort",
    "co": "Company",
    "vol": "volume",
    "ch": "chapter",
    "fig": "figure",
    "pp": "pages",
    "pt": "part",
    "ave": "Avenue",
    "rd": "Road",
    "gen": "General",
    "col": "Colonel",
    "capt": "Captain",
    "lt": "Lieutenant",
    "sgt": "Sergeant",
    "rev": "Reverend",
    "hon": "Honourable",
    "prof": "Professor",
    "jr": "Junior",
    "sr": "Senior",
    "vs": "versus",
    "etc": "et cetera",
    "approx": "approximately",
    "dept": "department",
    "govt": "government",
    "inc": "Incorporated",
    "ltd": "Limited",
    "bros": "Brothers",
    "cf": "compare",
    "viz": "namely",
    "ibid": "in the same place",
}
_INITIALISMS = {"e.g.": "for example", "i.e.": "that is", "a.m.": "A M", "p.m.": "P M"}
_ABBREVIATION = re.compile(
    r"(?<![\w.])(?:(?:[A-Za-z]\.){2,}|(?:" + "|".join(_ABBREVIATIONS) + r")\.)(?=\s|$|[,;:)])",
    re.IGNORECASE,
)
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9&]*[A-Z][A-Z0-9]*s?\b")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_SUFFIXES = (
    ("ies", "y"),
    ("ied", "y"),
    ("ier", "y"),
    ("iest", "y"),
    ("ily", "y"),
    ("es", ""),
    ("s", ""),
    ("ed", ""),
    ("ed", "e"),
    ("d", ""),
    ("ing", ""),
    ("ing", "e"),
    ("ly", ""),
    ("er", ""),
    ("est", ""),
    ("ness", ""),
    ("ment", ""),
    ("ful", ""),
    ("less", ""),
)
KINDS = ("roman", "ordinal", "number", "abbreviation", "acronym", "unknown")


@dataclass
class Finding:
    """A token likely to be misread: how often, and where first."""

    token: str
    kind: str
    count: int
    first: int  # the first segment's index
    suggestion: str | None = None  # an alias to say, if one is a good guess
    phonemes: str = ""  # what narrator would say now

    def command(self, project: Path) -> str:
        if self.suggestion is not None:
            how = f"--say {shlex.quote(self.suggestion)}"
        else:
            how = f"--ipa {shlex.quote(self.phonemes or '?')}"
        return f"narrator lexicon {shlex.quote(str(project))} add {shlex.quote(self.token)} {how}"

    def as_dict(self, project: Path) -> dict[str, object]:
        return {
            "token": self.token,
            "kind": self.kind,
            "count": self.count,
            "first_segment": self.first,
            "phonemes": self.phonemes,
            "suggestion": self.suggestion,
            "command": self.command(project),
        }


def roman_value(numeral: str) -> int:
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total = 0
    for here, after in zip(numeral, numeral[1:] + " ", strict=True):
        total += -values[here] if values.get(after, 0) > values[here] else values[here]
    return total


def _words(number: int, ordinal: bool = False) -> str:
    from num2words import num2words

    return num2words(number, to="ordinal" if ordinal else "cardinal")


def _romans(text: str) -> Iterable[tuple[str, str]]:
    """("Chapter XIV", "Chapter fourteen"), ("Henry VIII", "Henry the eighth")."""
    for match in _ROMAN_TOKEN.finditer(text):
        numeral = match[1]
        if not numeral:
            continue
        before = _WORD_BEFORE.search(text[: match.start()])
        if before is None:
            continue
        word = before[1]
        phrase = f"{word} {numeral}"
        if word.lower() == "war" and text[: before.start()].rstrip().endswith("World"):
            word = f"World {word}"  # the one war read by its count, not its ordinal
            phrase = f"World {phrase}"
        if word.lower().split()[-1] in _COUNTED.split():
            yield phrase, f"{word} {_words(roman_value(numeral))}"
        elif word[0].isupper() and not word.isupper() and (len(numeral) > 1 or numeral != "I"):
            yield phrase, f"{word} the {_words(roman_value(numeral), ordinal=True)}"


def _number_words(token: str) -> str | None:
    """An alias for a number token, where one reading is clear."""
    plain = token.replace(",", "").replace("’", "'")
    if re.fullmatch(r"\d+(?:st|nd|rd|th)", plain, re.IGNORECASE):
        return _words(int(plain[:-2]), ordinal=True)
    if re.fullmatch(r"\d{1,3}(?:\d{3})+", plain) or re.fullmatch(r"\d+", plain):
        return _words(int(plain))
    if re.fullmatch(r"\d{4}'?s", plain):  # 1990s: nineteen nineties
        year = int(plain[:4])
        head, tail = divmod(year, 100)
        decade = _words(tail) if tail else "hundred"
        decade = decade[:-1] + "ies" if decade.endswith("y") else decade + "s"
        return f"{_words(head)} {decade}"
    money = re.fullmatch(r"([$£€])(\d+)(?:\.(\d\d))?", plain)
    if money:
        whole, cents = int(money[2]), int(money[3] or 0)
        unit = _CURRENCIES[money[1]]
        said = f"{_words(whole)} {unit}{'s' if whole != 1 else ''}"
        return said + (f" {_words(cents)}" if cents else "")
    measure = re.fullmatch(r"(\d+(?:\.\d+)?)\s?(%|[a-z/°]+)", plain, re.IGNORECASE)
    if measure and measure[2].lower() in _UNIT_WORDS:
        return f"{_decimal_words(measure[1])} {_UNIT_WORDS[measure[2].lower()]}"
    if re.fullmatch(r"\d+\.\d+", plain):
        return _decimal_words(plain)
    return None


def _decimal_words(number: str) -> str:
    whole, _, fraction = number.partition(".")
    said = _words(int(whole))
    return said + (" point " + " ".join(_words(int(d)) for d in fraction) if fraction else "")


_CURRENCIES = {"$": "dollar", "£": "pound", "€": "euro"}
_UNIT_WORDS = {
    "%": "percent",
    "km": "kilometres",
    "kg": "kilograms",
    "mg": "milligrams",
    "g": "grams",
    "mm": "millimetres",
    "cm": "centimetres",
    "m": "metres",
    "mi": "miles",
    "mph": "miles per hour",
    "kph": "kilometres per hour",
    "km/h": "kilometres per hour",
    "lb": "pounds",
    "lbs": "pounds",
    "oz": "ounces",
    "ft": "feet",
    "yd": "yards",
    "ml": "millilitres",
    "l": "litres",
    "kw": "kilowatts",
    "°c": "degrees Celsius",
    "°f": "degrees Fahrenheit",
}


@cache
def _dictionary() -> frozenset[str]:
    """Every word misaki's English lexicons spell (lower case): the words its G2P knows
    rather than guesses (espeak-ng guesses the rest from its rules too)."""
    from importlib.resources import files

    words: set[str] = set()
    for name in ("us_gold.json", "us_silver.json", "gb_gold.json", "gb_silver.json"):
        words.update(w.lower() for w in json.loads((files("misaki.data") / name).read_text()))
    return frozenset(words)


def known(word: str, dictionary: frozenset[str] | None = None) -> bool:
    """Whether a word (or its stem) is in the G2P's dictionary."""
    words = dictionary if dictionary is not None else _dictionary()
    word = word.lower().replace("’", "'")
    for base in (word, word.removesuffix("'s"), word.removesuffix("'")):
        if base in words:
            return True
        for suffix, replacement in _SUFFIXES:
            if base.endswith(suffix) and len(base) > len(suffix) + 2:
                stem = base[: -len(suffix)] + replacement
                if stem in words or (len(stem) > 2 and stem[-1] == stem[-2] and stem[:-1] in words):
                    return True
    return all(part in words for part in re.split(r"[-']", word) if part) and "-" in word


class _Spans(list[tuple[int, int]]):
    """Parts of a text already claimed (by the lexicon, or by a finding)."""

    def free(self, start: int, end: int) -> bool:
        return not any(a < end and start < b for a, b in self)


def _mostly_capitals(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    return len(letters) > 8 and sum(ch.isupper() for ch in letters) > 0.6 * len(letters)


def find_traps(
    segments: Iterable[tuple[int, str]],
    lexicon: Lexicon | None = None,
    is_known: Callable[[str], bool] = known,
) -> list[Finding]:
    """The tokens of `segments` ((index, text) pairs) likely to be misread, counted, with
    the first segment of each; what `lexicon` already says is left out. Sorted by count."""
    found: dict[tuple[str, str], Finding] = {}

    def note(token: str, kind: str, index: int, suggestion: str | None = None) -> None:
        key = (token, kind)
        if key in found:
            found[key].count += 1
        else:
            found[key] = Finding(token, kind, 1, index, suggestion)

    lexicon = lexicon or Lexicon()
    for index, text in segments:
        taken = _Spans([(a, b) for a, b, _ in lexicon.find(text)])
        free = taken.free

        for phrase, said in _romans(text):
            at = text.find(phrase)
            if free(at, at + len(phrase)):
                taken.append((at, at + len(phrase)))
                note(phrase, "roman", index, said)
        for pattern, kind in ((_ORDINAL, "ordinal"), (_NUMBER, "number")):
            for m in pattern.finditer(text):
                if free(m.start(), m.end()):
                    taken.append(m.span())
                    note(m[0], kind, index, _number_words(m[0]))
        for m in _ABBREVIATION.finditer(text):
            if free(m.start(), m.end()):
                taken.append(m.span())
                expansion = _ABBREVIATIONS.get(m[0][:-1].lower()) or _INITIALISMS.get(
                    m[0].lower(), " ".join(m[0].replace(".", ""))
                )
                note(m[0], "abbreviation", index, expansion)
        shouting = _mostly_capitals(text)
        for m in _ACRONYM.finditer(text):
            token = m[0]
            if shouting or not free(m.start(), m.end()):
                continue
            stem = token[:-1] if token.endswith("s") and len(token) > 2 else token
            if _ROMAN_TOKEN.fullmatch(stem) or (len(stem) <= 4 and is_known(stem)):
                continue  # a numeral out of context, or a word in capitals for emphasis
            taken.append(m.span())
            note(token, "acronym", index, " ".join(stem))
        for m in _WORD.finditer(text):
            word = m[0]
            if len(word) < 3 or not free(m.start(), m.end()) or word.isupper() and shouting:
                continue
            if not is_known(word):
                note(word.strip("'’"), "unknown", index)
    return sorted(found.values(), key=lambda f: (-f.count, f.first, f.token))
