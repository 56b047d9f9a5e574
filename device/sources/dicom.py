"""DICOM files from the scanner's export, through pydicom.

Transfer syntaxes: uncompressed (implicit/explicit VR), RLE Lossless (pydicom's own decoder) and
JPEG Baseline (pylibjpeg). Multi-frame cine: every frame, or one chosen frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from device.errors import ImageDecodeError
from device.imageio import normalise_frame
from device.sources.base import Frame


def dicom_frames(path: Path, chosen: int | None = None) -> Iterator[Frame]:
    dataset = _read(path)
    count = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if chosen is not None and not 0 <= chosen < count:
        raise ImageDecodeError(f"{path}: frame {chosen} requested, the file has {count} frame(s)", "bad_frame_index")
    indices = [chosen] if chosen is not None else range(count)
    for index in indices:
        array = _pixels(dataset, path, index if count > 1 else None)
        if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
            full_scale = (1 << int(getattr(dataset, "BitsStored", 8))) - 1
            array = full_scale - array.astype(np.int64)  # MONOCHROME1: high values are dark
        yield Frame(normalise_frame(array), f"{path}#frame={index}" if count > 1 else str(path), index)


def _read(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path)
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{path}: file not found", "not_found") from exc
    except PermissionError as exc:
        raise ImageDecodeError(f"{path}: permission denied", "unreadable") from exc
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ImageDecodeError(f"{path}: not a readable DICOM file ({exc})", "corrupt_dicom") from exc
    if "PixelData" not in dataset:
        raise ImageDecodeError(f"{path}: DICOM file has no pixel data (e.g. a report or structured document)", "no_pixel_data")
    return dataset


def _pixels(dataset, path: Path, index: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        if index is None:
            return dataset.pixel_array
        return pixel_array(dataset, index=index)
    except (NotImplementedError, RuntimeError) as exc:
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
        raise ImageDecodeError(f"{path}: cannot decode pixel data with transfer syntax {syntax} ({exc})", "unsupported_dicom") from exc
    except (ValueError, AttributeError, KeyError, IndexError) as exc:
        raise ImageDecodeError(f"{path}: corrupt DICOM pixel data ({exc})", "corrupt_dicom") from exc
