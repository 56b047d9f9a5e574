"""DICOM files from the scanner's export, through pydicom.

Transfer syntaxes: uncompressed (implicit/explicit VR), RLE Lossless (pydicom's own decoder) and
JPEG Baseline (pylibjpeg). Multi-frame cine: every frame, or one chosen frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from device.errors import ImageDecodeError
from device.imageio import check_decoded_size, normalise_frame
from device.sources.base import Frame
from device.spacing import PixelSpacing

if TYPE_CHECKING:  # pydicom itself is imported when a DICOM file is read
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)


def dicom_frames(path: Path, chosen: int | None = None) -> Iterator[Frame]:
    dataset = _read(path)
    count = _int(dataset, "NumberOfFrames", 1, path) or 1
    if chosen is not None and not 0 <= chosen < count:
        raise ImageDecodeError(f"{path}: frame {chosen} requested, the file has {count} frame(s)", "bad_frame_index")
    _check_frame_size(dataset, path)  # from the header, before anything is decoded
    spacing = pixel_spacing(dataset, path)
    indices = [chosen] if chosen is not None else range(count)
    for index in indices:
        array = _pixels(dataset, path, index if count > 1 else None)
        if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
            full_scale = (1 << int(getattr(dataset, "BitsStored", 8))) - 1
            inverted = full_scale - array.astype(np.int32)  # MONOCHROME1: high values are dark
            # Back to 16 bits when the values fit (they do unless the data exceed BitsStored): the conversion
            # to uint8 then needs no wide temporaries; the values, and so the frame, are the same.
            array = inverted.astype(np.uint16) if full_scale <= 0xFFFF and int(inverted.min()) >= 0 else inverted
        yield Frame(normalise_frame(array), f"{path}#frame={index}" if count > 1 else str(path), index, spacing=spacing)


CM = 3  # PhysicalUnitsX/YDirection code for centimetres (DICOM C.8.5.5.1.1)


def pixel_spacing(dataset: Dataset, path: Path) -> PixelSpacing | None:
    """mm per pixel from the header: the first ultrasound region calibrated in cm (``PhysicalDeltaX/Y``), else
    ``PixelSpacing`` (row spacing, column spacing, in mm). None when the header gives neither, or an implausible
    figure (logged, naming the file): the frame is still analysed, its sizes then stay in pixels."""
    try:
        for region in dataset.get("SequenceOfUltrasoundRegions", None) or ():
            if region.get("PhysicalUnitsXDirection") == CM and region.get("PhysicalUnitsYDirection") == CM:
                return PixelSpacing(
                    abs(float(region.PhysicalDeltaX)) * 10.0, abs(float(region.PhysicalDeltaY)) * 10.0, "dicom:SequenceOfUltrasoundRegions"
                )
        spacing = dataset.get("PixelSpacing", None)
        if spacing is not None and len(spacing) == 2:
            return PixelSpacing(float(spacing[1]), float(spacing[0]), "dicom:PixelSpacing")
    except (AttributeError, TypeError, ValueError) as exc:
        log.warning("%s: DICOM pixel spacing unusable (%s): sizes in pixels", path, exc)
    return None


def _int(dataset: Dataset, keyword: str, default: int, path: Path) -> int:
    try:
        return int(getattr(dataset, keyword, default) if getattr(dataset, keyword, None) is not None else default)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(f"{path}: DICOM {keyword} is not a number", "corrupt_dicom") from exc


def _check_frame_size(dataset: Dataset, path: Path) -> None:
    """Refuse, from the header, a frame whose decoded pixels would be too large (Rows x Columns x SamplesPerPixel
    x bytes allocated), before pydicom allocates anything for it. Frames are decoded one at a time, so the
    limit is per frame."""
    rows, columns = _int(dataset, "Rows", 0, path), _int(dataset, "Columns", 0, path)
    samples = _int(dataset, "SamplesPerPixel", 1, path)
    allocated = _int(dataset, "BitsAllocated", 8, path)
    if rows <= 0 or columns <= 0 or samples <= 0 or allocated <= 0:
        raise ImageDecodeError(f"{path}: DICOM image size {columns}x{rows}x{samples} ({allocated} bits) is invalid", "corrupt_dicom")
    # pydicom decodes each sample into its allocated width (1-bit data into a byte).
    check_decoded_size(str(path), rows, columns, samples * max(1, (allocated + 7) // 8))


def _read(path: Path) -> Dataset:
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


def _pixels(dataset: Dataset, path: Path, index: int | None) -> np.ndarray:
    from pydicom.pixels.utils import pixel_array

    try:
        if index is None:
            return dataset.pixel_array
        return pixel_array(dataset, index=index)
    except (NotImplementedError, RuntimeError) as exc:
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
        raise ImageDecodeError(f"{path}: cannot decode pixel data with transfer syntax {syntax} ({exc})", "unsupported_dicom") from exc
    except (ValueError, AttributeError, KeyError, IndexError) as exc:
        raise ImageDecodeError(f"{path}: corrupt DICOM pixel data ({exc})", "corrupt_dicom") from exc
