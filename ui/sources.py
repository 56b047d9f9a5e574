"""Which frame sources can be chosen in Settings: the configured one, capture cards (/dev/video*), the
Pi camera, and folders of images/DICOM on USB sticks mounted under the configured roots."""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.config import SourceSection
from device.sources import open_source
from device.sources.files import SUPPORTED_SUFFIXES

MAX_DEPTH = 3
MAX_CHOICES = 24


@dataclass(frozen=True)
class SourceChoice:
    spec: str
    title: str


def image_count(folder: Path, limit: int = 1000) -> int:
    count = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and not entry.name.startswith(".") and Path(entry.name).suffix.lower() in SUPPORTED_SUFFIXES:
                    count += 1
                    if count >= limit:
                        break
    except OSError:
        return 0
    return count


def image_folders(root: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """Folders under ``root`` (itself included, up to ``depth`` levels) that hold readable images."""
    found: list[Path] = []
    stack = [(root, 0)]
    while stack and len(found) < MAX_CHOICES:
        folder, level = stack.pop()
        if image_count(folder, 1):
            found.append(folder)
        if level >= depth:
            continue
        try:
            children = sorted((Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")), reverse=True)
        except OSError:
            continue
        stack.extend((child, level + 1) for child in children)
    return found


def candidate_sources(configured: str, roots: tuple[Path, ...]) -> list[SourceChoice]:
    choices = [SourceChoice(configured, f"Configured: {configured}")]
    for device in sorted(glob.glob("/dev/video*")):
        choices.append(SourceChoice(f"v4l2:{device}", f"Capture card {device}"))
    if importlib.util.find_spec("picamera2") is not None:
        choices.append(SourceChoice("picamera", "Raspberry Pi camera"))
    for root in roots:
        if not root.is_dir():
            continue
        for folder in image_folders(root):
            choices.append(SourceChoice(f"folder:{folder}", f"{folder.name or folder} — {image_count(folder)} image(s)  ({folder})"))
    unique: dict[str, SourceChoice] = {}
    for choice in choices:
        unique.setdefault(choice.spec, choice)
    return list(unique.values())[:MAX_CHOICES]


def probe_source(spec: str, settings: SourceSection) -> str:
    """Open a source and read one frame; a sentence saying what was found (raises on failure)."""
    source = open_source(spec, settings)
    try:
        source.open()
        frame = source.read()
        if frame is None:
            return f"{spec}: opened, but no frame arrived"
        image: np.ndarray = frame.image
        kind = "colour" if image.ndim == 3 else "grey"
        return f"Works: {image.shape[1]}×{image.shape[0]} {kind} frame from {frame.origin}"
    finally:
        source.close()
