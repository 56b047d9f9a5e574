"""device/barcode.py: a patient reference typed or scanned is accepted only in the site's format; a scanner's
Enter/Tab and symbology prefix are stripped, case is normalised, and anything else (control characters, a code
that is not a reference) is refused with a message naming the problem and the input."""

from __future__ import annotations

import pytest

from device.barcode import (
    BarcodeError,
    PatientIdError,
    PatientIdFormat,
    check_patient_id,
    parse_scan,
)


@pytest.mark.parametrize("typed, stored", [("10452", "10452"), ("ab-1234", "AB-1234"), ("  X9 ", "X9")])
def test_a_valid_reference_is_normalised(typed: str, stored: str) -> None:
    assert check_patient_id(typed) == stored


@pytest.mark.parametrize(
    "typed, words",
    [
        ("", "Enter the patient ID"),
        ("7", "too short"),
        ("A" * 21, "too long"),
        ("-123", "not in this site's format"),
        ("AB 12", "not in this site's format"),
        ("12-", "not in this site's format"),
    ],
)
def test_an_invalid_reference_is_refused_saying_why(typed: str, words: str) -> None:
    with pytest.raises(PatientIdError, match=words):
        check_patient_id(typed)


def test_the_format_is_the_sites() -> None:
    mrn = PatientIdFormat(pattern=r"MRN[0-9]{6}", min_length=9, max_length=9, example="MRN004512")
    assert check_patient_id("mrn004512", mrn) == "MRN004512"
    with pytest.raises(PatientIdError, match=r"'MRN04512' is too short"):
        check_patient_id("MRN04512", mrn)
    with pytest.raises(PatientIdError, match="e.g. MRN004512"):
        check_patient_id("ABC004512", mrn)


def test_a_broken_format_is_refused_when_made() -> None:
    with pytest.raises(PatientIdError, match="not a regular expression"):
        PatientIdFormat(pattern="[A-Z")
    with pytest.raises(PatientIdError, match="length 5-3"):
        PatientIdFormat(min_length=5, max_length=3)


@pytest.mark.parametrize("raw", ["A12345\r", "A12345\n", "a12345\r\n", "]C1A12345\r", "]Q1a12345\t", " A12345 "])
def test_a_scan_keeps_only_the_reference(raw: str) -> None:
    scan = parse_scan(raw)
    assert scan.reference == "A12345" and scan.raw == raw


@pytest.mark.parametrize(
    "raw, words",
    [
        ("\r", "is empty"),
        ("A12\x1d345\r", "control characters"),
        ("http://x.org\r", "not in this site's format"),
        ("]C1\r", "is empty"),
    ],
)
def test_a_scan_that_is_not_a_reference_is_refused(raw: str, words: str) -> None:
    with pytest.raises(BarcodeError, match=words) as error:
        parse_scan(raw)
    assert error.value.code == "barcode"
