"""The patient a DICOM frame belongs to, as its file says (tag PatientID), read from the file's header only.

Frames carry their file in ``Frame.origin`` (``/media/usb/exam/img1.dcm`` or ``…/cine.dcm#frame=3``); the DICOM
source itself keeps no header data, so the touchscreen asks here, off its GUI thread. The ID is normalised like a
typed one (:func:`device.barcode.normalise`), so ``k10452`` in the file and ``K10452`` on the wristband agree."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from device.barcode import normalise
from device.errors import ImageDecodeError
from device.imageio import DICOM_SUFFIXES

log = logging.getLogger(__name__)


def frame_file(origin: str) -> Path:
    """The file a frame came from: its origin without a ``#frame=N`` suffix."""
    return Path(origin.split("#frame=", 1)[0])


def is_dicom_origin(origin: str) -> bool:
    return frame_file(origin).suffix.lower() in DICOM_SUFFIXES


@dataclass(frozen=True)
class FilePatient:
    """What the file says: ``patient_id`` None when the file has no (or an empty) PatientID."""

    path: Path
    patient_id: str | None


def dicom_patient(origin: str) -> FilePatient:
    """PatientID of the DICOM file behind ``origin``; :class:`ImageDecodeError` naming the file if unreadable."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = frame_file(origin)
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{path}: file not found", "not_found") from exc
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ImageDecodeError(f"{path}: cannot read the DICOM header for PatientID ({exc})", "corrupt_dicom") from exc
    value = normalise(str(getattr(dataset, "PatientID", "") or ""))
    return FilePatient(path, value or None)


def mismatch(file_patient: FilePatient | None, exam_patient: str) -> str | None:
    """Why a frame from this file must not be stored under ``exam_patient``; None when nothing says it must not."""
    if file_patient is None or file_patient.patient_id is None:
        return None
    if file_patient.patient_id == normalise(exam_patient):
        return None
    return f"{file_patient.path.name} belongs to patient {file_patient.patient_id} (its DICOM PatientID), but the open exam is for {exam_patient}"
