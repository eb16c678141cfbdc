"""Kokoro voice packs (.pt files) read without torch, and blends of them."""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


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
    torch, which a process that renders on onnxruntime need not load; a file in another
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
