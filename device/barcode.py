"""Patient references as clinics have them — alphanumeric, in a site-defined format — typed on the screen or read
by a USB barcode / wristband scanner. No Qt: the touchscreen recognises a scan and hands the raw text here.

A USB HID scanner "types" its code as key presses ending in Enter; what reaches the app may carry the Enter (CR
or LF), a Tab, a symbology identifier (``]C1`` for Code 128, ``]Q1`` for QR, ...) or lower-case letters from the
host's keyboard layout. :func:`parse_scan` strips exactly those, then checks the result against the
:class:`PatientIdFormat` like a typed reference (:func:`check_patient_id`). Errors name the problem and the input.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from device.errors import SonopiError

log = logging.getLogger(__name__)

DEFAULT_PATTERN = r"[A-Z0-9](?:[A-Z0-9-]*[A-Z0-9])?"
DEFAULT_MIN_LENGTH = 2
DEFAULT_MAX_LENGTH = 20  # the MQTT contract allows 64; 20 fits every hospital number we know and the screen
ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")  # what the on-screen keyboard can type
SYMBOLOGY_ID = re.compile(r"^\][A-Za-z][0-9A-Za-z]")  # AIM identifier a scanner may put in front of the code
TERMINATORS = "\r\n\t"


class PatientIdError(SonopiError):
    """A typed or scanned text is not a patient reference in this site's format."""

    code = "patient_id"


class BarcodeError(PatientIdError):
    """A scanned code cannot be a patient reference (empty, control characters, wrong format)."""

    code = "barcode"


@dataclass(frozen=True)
class PatientIdFormat:
    """What a patient reference looks like at this site: a regular expression the whole reference must match
    (after upper-casing) and a length range. ``example`` is shown to the clinician when a reference is refused."""

    pattern: str = DEFAULT_PATTERN
    min_length: int = DEFAULT_MIN_LENGTH
    max_length: int = DEFAULT_MAX_LENGTH
    example: str = "A12345"
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_length <= self.max_length <= 64:
            raise PatientIdError(f"patient ID format: length {self.min_length}-{self.max_length} must be within 1-64")
        try:
            object.__setattr__(self, "_regex", re.compile(self.pattern))
        except re.error as exc:
            raise PatientIdError(f"patient ID format: pattern {self.pattern!r} is not a regular expression ({exc})") from exc

    def problem(self, reference: str) -> str | None:
        """Why ``reference`` (already normalised) is not valid, in words for the screen; None when it is."""
        if not reference:
            return "Enter the patient ID"
        if len(reference) < self.min_length:
            return f"Patient ID {reference!r} is too short: at least {self.min_length} characters (e.g. {self.example})"
        if len(reference) > self.max_length:
            return f"Patient ID {reference[: self.max_length]}… is too long: at most {self.max_length} characters (e.g. {self.example})"
        if self._regex.fullmatch(reference) is None:
            return f"Patient ID {reference!r} is not in this site's format (e.g. {self.example})"
        return None


def normalise(text: str) -> str:
    """The reference as stored: surrounding blanks removed, letters upper-case (``a12`` and ``A12`` are one patient)."""
    return text.strip().upper()


def check_patient_id(text: str, fmt: PatientIdFormat | None = None) -> str:
    """The normalised reference; :class:`PatientIdError` naming the problem and the input otherwise."""
    fmt = fmt or PatientIdFormat()
    reference = normalise(text)
    problem = fmt.problem(reference)
    if problem is not None:
        raise PatientIdError(problem)
    return reference


@dataclass(frozen=True)
class Scan:
    """A code read by the scanner: the patient reference it carries and the raw text as received (for the log)."""

    reference: str
    raw: str


def parse_scan(raw: str, fmt: PatientIdFormat | None = None) -> Scan:
    """A scanner's raw text -> the patient reference; :class:`BarcodeError` when it cannot be one.

    Strips the Enter/Tab the scanner ends with and a leading AIM symbology identifier; refuses control
    characters (a scanner set to send GS1 separators, or line noise) rather than guessing."""
    text = raw.strip(TERMINATORS + " ")
    text = SYMBOLOGY_ID.sub("", text, count=1)
    if not text:
        raise BarcodeError(f"scanned code {raw!r} is empty")
    bad = sorted({repr(c) for c in text if ord(c) < 32 or ord(c) == 127})
    if bad:
        raise BarcodeError(f"scanned code {raw!r} contains control characters {', '.join(bad)}: not a patient ID")
    try:
        reference = check_patient_id(text, fmt)
    except PatientIdError as exc:
        raise BarcodeError(f"scanned code {raw!r}: {exc}") from exc
    log.info("scanned patient ID accepted (%d characters)", len(reference))  # never the reference itself
    return Scan(reference, raw)
