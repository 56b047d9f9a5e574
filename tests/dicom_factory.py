"""Real DICOM files for tests, written with pydicom: uncompressed, RLE Lossless, JPEG Baseline, cine."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def _dataset(frames: np.ndarray, photometric: str = "MONOCHROME2"):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientID = "TEST-0001"
    count, rows, cols = frames.shape[:3]
    ds.Rows, ds.Columns = rows, cols
    if count > 1:
        ds.NumberOfFrames = count
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = frames.astype(np.uint8).tobytes()
    return ds


def write_dicom(path: Path, frames: np.ndarray, syntax: str = "explicit", photometric: str = "MONOCHROME2") -> Path:
    """frames: [n, rows, cols] uint8. syntax: explicit | rle | jpeg | nopixels."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, RLELossless

    ds = _dataset(frames, photometric)
    if syntax == "rle":
        ds.compress(RLELossless)
    elif syntax == "jpeg":
        fragments = []
        for frame in frames:
            buf = io.BytesIO()
            Image.fromarray(frame.astype(np.uint8)).save(buf, format="JPEG", quality=95)
            fragments.append(buf.getvalue())
        ds.PixelData = encapsulate(fragments)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    elif syntax == "nopixels":
        del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    return path
