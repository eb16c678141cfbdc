"""The Kokoro v1.0 voice catalogue, voice blends, and the language a voice speaks."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from narrator.errors import BadInput

if TYPE_CHECKING:
    pass

# Kokoro's language codes: the first letter of a voice id. espeak is the espeak-ng
# language misaki's espeak backend uses for it.
LANGUAGES: dict[str, tuple[str, str, str]] = {
    # code: (alias, name, espeak language)
    "a": ("en-us", "American English", "en-us"),
    "b": ("en-gb", "British English", "en-gb"),
    "e": ("es", "Spanish", "es"),
    "f": ("fr-fr", "French", "fr-fr"),
    "h": ("hi", "Hindi", "hi"),
    "i": ("it", "Italian", "it"),
    "p": ("pt-br", "Brazilian Portuguese", "pt-br"),
    "j": ("ja", "Japanese", "ja"),
    "z": ("zh", "Mandarin Chinese", "cmn"),
}

_CATALOGUE = {
    "a": "af_heart af_alloy af_aoede af_bella af_jessica af_kore af_nicole af_nova af_river "
    "af_sarah af_sky am_adam am_echo am_eric am_fenrir am_liam am_michael am_onyx am_puck "
    "am_santa",
    "b": "bf_alice bf_emma bf_isabella bf_lily bm_daniel bm_fable bm_george bm_lewis",
    "j": "jf_alpha jf_gongitsune jf_nezumi jf_tebukuro jm_kumo",
    "z": "zf_xiaobei zf_xiaoni zf_xiaoxiao zf_xiaoyi zm_yunjian zm_yunxi zm_yunxia zm_yunyang",
    "e": "ef_dora em_alex em_santa",
    "f": "ff_siwis",
    "h": "hf_alpha hf_beta hm_omega hm_psi",
    "i": "if_sara im_nicola",
    "p": "pf_dora pm_alex pm_santa",
}
VOICES: tuple[str, ...] = tuple(v for group in _CATALOGUE.values() for v in group.split())
SPEED_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class VoicePart:
    """One voice of a blend: a catalogue id or a path to a .pt pack, and its weight."""

    name: str
    weight: float

    @property
    def is_file(self) -> bool:
        return self.name.endswith(".pt")


def canonical_voice(spec: str) -> str:
    """The voice as stored: .pt packs by absolute path, weights only where not 1."""
    return ",".join(
        (str(Path(p.name).resolve()) if p.is_file else p.name)
        + ("" if p.weight == 1 else f":{p.weight:g}")
        for p in parse_voice(spec)
    )


def describe(voice_id: str) -> tuple[str, str]:
    """(language name, gender) of a catalogue voice."""
    return LANGUAGES[voice_id[0]][1], {"f": "female", "m": "male"}[voice_id[1]]


def did_you_mean(name: str, present: Sequence[str] = (), catalogue: bool = True) -> str:
    """ " (did you mean af_bella?)": the closest voices the model here has, else (with
    `catalogue`) the closest in Kokoro's catalogue; "" when none is close."""
    close = difflib.get_close_matches(name, present, n=2, cutoff=0.6) or (
        difflib.get_close_matches(name, VOICES, n=2, cutoff=0.6) if catalogue else []
    )
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def parse_voice(
    spec: str, check_files: bool = True, present: Sequence[str] = ()
) -> list[VoicePart]:
    """Parse `af_heart`, `af_bella,af_sky`, `af_bella:2,af_sky:1` or `path/to/pack.pt`.
    `present`: the voices of the model found here, suggested first for a typo."""
    parts = []
    for item in spec.split(","):
        name, _, weight_text = item.strip().rpartition(":") if ":" in item else (item, "", "1")
        name = name.strip()
        try:
            weight = float(weight_text)
        except ValueError:
            raise BadInput(f"voice weight {weight_text!r} in {spec!r} is not a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise BadInput(f"voice weight in {spec!r} must be a positive number")
        if not name.endswith(".pt") and name not in VOICES:
            raise BadInput(
                f"unknown voice {name!r}{did_you_mean(name, present)}; choose from "
                "`narrator voices`, a blend like af_bella,af_sky, or a .pt file"
            )
        if check_files and name.endswith(".pt") and not Path(name).is_file():
            raise BadInput(f"voice file {name} does not exist")
        parts.append(VoicePart(name, weight))
    if not parts or not parts[0].name:
        raise BadInput("the voice is empty; choose one from `narrator voices`")
    return parts


# Of Kokoro's Japanese voices, the one a recogniser understands best reading English
# (bench/intelligibility.py).
ENGLISH_READER = "jm_kumo"


def english_reader(present: Sequence[str]) -> str:
    """The voice to read English with when a model has no English voice."""
    return ENGLISH_READER if ENGLISH_READER in present or not present else present[0]


def english_hint(present: Sequence[str]) -> str | None:
    """What to set for English speech where a model has no English voice (the PyPI rebuild
    holds the five Japanese voices only); None where it has one."""
    if any(v[0] in "ab" for v in present):
        return None
    return (
        f"Its voices ({', '.join(present)}) are Japanese; for English speech: "
        f"narrator settings PROJECT --voice {english_reader(present)} --lang en-us"
    )


def normalise_lang(lang: str) -> str:
    """Kokoro's one-letter code for `a` / `en-us` style names; BadInput otherwise."""
    lang = lang.strip().lower()
    for code, (alias, _, _) in LANGUAGES.items():
        if lang in (code, alias):
            return code
    choices = ", ".join(f"{alias} ({code})" for code, (alias, _, _) in LANGUAGES.items())
    raise BadInput(f"unknown language {lang!r}; choose one of {choices}")


def language_of(voice: str, lang: str | None = None) -> str:
    """The language a voice speaks: `lang` when given, else its first voice's letter."""
    if lang:
        return normalise_lang(lang)
    first = parse_voice(voice, check_files=False)[0]
    letter = Path(first.name).name[0] if first.is_file else first.name[0]
    if letter not in LANGUAGES:
        raise BadInput(f"cannot tell the language of voice {first.name}; give one with --lang")
    return letter


def check_speed(speed: float) -> float:
    low, high = SPEED_RANGE
    if not low <= speed <= high:
        raise BadInput(f"speed {speed} is outside {low}-{high}; 1.0 is normal speed")
    return speed
