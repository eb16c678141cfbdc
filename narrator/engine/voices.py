"""The Kokoro v1.0 voice catalogue, voice blends, and the language a voice speaks."""

from __future__ import annotations

import collections
import difflib
import math
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from narrator.errors import BadInput

if TYPE_CHECKING:
    import numpy as np

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
# (bench/intelligibility.py: word error rate 0.22).
ENGLISH_READER = "jm_kumo"


def english_reader(present: Sequence[str]) -> str:
    """The voice to read English with when a model has no English voice."""
    return ENGLISH_READER if ENGLISH_READER in present or not present else present[0]


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


# The element types a voice pack's storage may have, as torch.save names them.
_STORAGES = {"FloatStorage": "<f4", "HalfStorage": "<f2", "DoubleStorage": "<f8"}


class _PackUnpickler(pickle.Unpickler):
    """Reads the one tensor torch.save wrote into a zip archive (Kokoro's voice packs)
    as a numpy array, without torch: its data.pkl names a storage, kept raw in the
    archive, and the tensor's offset, shape and strides over it. It calls nothing but
    _tensor; any other callable, or a storage of another kind, raises."""

    def __init__(self, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(archive.open(f"{root}/data.pkl"))
        self._archive, self._root = archive, root

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _tensor
        if module == "torch" and name in _STORAGES:
            return _STORAGES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"not a plain tensor: {module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        import numpy as np

        kind, dtype, key, _location, size = pid
        if kind != "storage" or dtype not in _STORAGES.values():
            raise pickle.UnpicklingError(f"not a tensor storage: {kind} {dtype}")
        storage = np.frombuffer(self._archive.read(f"{self._root}/data/{key}"), dtype=dtype)
        if storage.size != size:
            raise pickle.UnpicklingError(f"storage {key}: {storage.size} items, not {size}")
        return storage


def _tensor(
    storage: np.ndarray, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], *_: object
) -> np.ndarray:
    """torch's _rebuild_tensor_v2 in numpy: a copy, after checking that the view lies
    inside its storage (as torch does)."""
    import numpy as np

    if len(shape) != len(strides) or offset < 0 or min((*shape, *strides), default=0) < 0:
        raise pickle.UnpicklingError("a tensor of negative extent")
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    if 0 not in shape and last >= storage.size:
        raise pickle.UnpicklingError("a tensor outside its storage")
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape, [s * item for s in strides]
    ).astype(np.float32)


def read_pack(path: Path) -> np.ndarray:
    """A voice pack (a tensor saved by torch.save) as float32, read without importing
    torch (0.9 s and 200 MiB of a process that renders on onnxruntime); a file in another
    form (torch's legacy format, another element type, not a tensor, damaged) goes to
    torch.load, which reads it or says what is wrong with it."""
    import numpy as np

    try:
        with zipfile.ZipFile(path) as archive:
            root = archive.namelist()[0].split("/")[0]
            if archive.read(f"{root}/byteorder") != b"little":
                raise pickle.UnpicklingError("big-endian")
            pack = _PackUnpickler(archive, root).load()
        if not isinstance(pack, np.ndarray):
            raise pickle.UnpicklingError("not a tensor")
    except (
        OSError,
        EOFError,
        KeyError,
        IndexError,
        ValueError,
        TypeError,
        AttributeError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
    ):
        import torch

        return torch.load(path, map_location="cpu", weights_only=True).detach().float().numpy()
    return pack


def blend_packs(packs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The weighted mean of voice packs (float32, as torch computed it)."""
    import numpy as np

    w = np.array(weights, dtype=np.float32)
    return (np.stack(packs) * (w / w.sum()).reshape(-1, 1, 1, 1)).sum(axis=0)
