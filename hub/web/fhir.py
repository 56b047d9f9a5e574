"""A hub result as a FHIR R4 ``DiagnosticReport`` with one contained ``Observation`` per class probability, and
an exam (every frame stored under one exam id) as one ``DiagnosticReport`` with one ``Observation`` per frame
(its p(malignant), with the other class probabilities as components).

The lesion's side and clock position (contract v2, optional) go into ``bodySite`` ("right breast, 10 o'clock");
the patient's age, when the device sent it, into a ``urn:sonopi:patient-age`` extension (an ``Age``), since the
report carries no Patient resource. "Delivered late" is the console's rule (more than 5 minutes from creation
to the hub, ``hub/web/risk.py``), not the contract's ``historical`` flag.

Status is always ``preliminary``: the output is decision support, not a diagnosis, and the
``conclusion`` says so. Codes are local (``urn:sonopi:...``) rather than guessed LOINC/SNOMED codes; a
hospital's interface engine maps them. The patient is referenced by identifier only (the clinic's
reference as entered on the device), never by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.store import StoredResult
from hub.web import DISCLAIMER
from hub.web.risk import assess, is_late

SYSTEM = "urn:sonopi"
RESULT_ID_SYSTEM = f"{SYSTEM}:result-id"
PATIENT_REF_SYSTEM = f"{SYSTEM}:patient-ref"
EXAM_ID_SYSTEM = f"{SYSTEM}:exam-id"
CODE_SYSTEM = f"{SYSTEM}:code"
CLASS_SYSTEM = f"{SYSTEM}:class"
SIDE_TEXT = {"L": "left breast", "R": "right breast"}


def _class_code(name: str) -> dict[str, Any]:
    return {"coding": [{"system": CLASS_SYSTEM, "code": name, "display": name}], "text": name}


def observation(result: StoredResult, cls: str, probability: float) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"prob-{cls}",
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging", "display": "Imaging"}]}],
        "code": {
            "coding": [{"system": CODE_SYSTEM, "code": f"probability-{cls}", "display": f"Model probability of class '{cls}'"}],
            "text": f"Probability: {cls}",
        },
        "effectiveDateTime": result.created_at,
        "valueQuantity": {"value": round(float(probability), 6), "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"},
        "device": {"display": f"{result.site}/{result.device_id} {result.model_name} {result.model_version}"},
    }
    if result.patient_ref:
        obs["subject"] = {"identifier": {"system": PATIENT_REF_SYSTEM, "value": result.patient_ref}}
    if cls in result.thresholds:
        obs["referenceRange"] = [
            {
                "low": {"value": float(result.thresholds[cls]), "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"},
                "text": "decision threshold",
            }
        ]
    site = body_site(result)
    if site:
        obs["bodySite"] = {"text": site}
    return obs


def body_site(result: StoredResult) -> str:
    """ "right breast, 10 o'clock" from the side and clock position the device sent (either may be missing)."""
    parts = [SIDE_TEXT[result.side]] if result.side in SIDE_TEXT else []
    if result.clock is not None:
        parts.append(f"{result.clock} o'clock")
    return ", ".join(parts)


def _age(age: int) -> dict[str, Any]:
    return {"url": f"{SYSTEM}:patient-age", "valueAge": {"value": int(age), "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}}


def conclusion(result: StoredResult) -> str:
    if result.inconclusive:
        why = ", ".join(result.reasons) or "no reason given"
        text = f"Inconclusive ({why})."
    else:
        text = f"Model label: {result.label}."
    return f"{text} {DISCLAIMER}."


def diagnostic_report(result: StoredResult) -> dict[str, Any]:
    """The FHIR R4 JSON object (a dict ready for ``json.dumps``)."""
    observations = [observation(result, cls, p) for cls, p in sorted(result.probabilities.items())]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": result.result_id,
        "meta": {"tag": [{"system": CODE_SYSTEM, "code": "decision-support", "display": DISCLAIMER}]},
        "contained": observations,
        "identifier": [{"system": RESULT_ID_SYSTEM, "value": result.result_id}],
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]}],
        "code": {
            "coding": [{"system": CODE_SYSTEM, "code": "breast-us-ai-classification", "display": "Breast ultrasound AI classification"}],
            "text": "Breast ultrasound AI classification (decision support)",
        },
        "effectiveDateTime": result.created_at,
        "issued": result.received_at,
        "performer": [{"display": f"sonopi device {result.site}/{result.device_id}"}],
        "result": [{"reference": f"#{obs['id']}", "display": obs["code"]["text"]} for obs in observations],
        "conclusion": conclusion(result),
        "conclusionCode": [_class_code("inconclusive" if result.inconclusive else str(result.label))],
        "extension": [
            {"url": f"{SYSTEM}:model", "valueString": f"{result.model_name} {result.model_version} sha256:{result.model_sha256}"},
            {"url": f"{SYSTEM}:delivered-late", "valueBoolean": is_late(result.created_at, result.received_at)},
        ],
    }
    if result.age is not None:
        report["extension"].append(_age(result.age))
    if result.patient_ref:
        report["subject"] = {"identifier": {"system": PATIENT_REF_SYSTEM, "value": result.patient_ref}}
    if result.exam_id:
        report["identifier"].append({"system": EXAM_ID_SYSTEM, "value": result.exam_id})
    return report


def _frame_observation(n: int, result: StoredResult) -> dict[str, Any]:
    """One frame of an exam: its p(malignant) as the value, every class probability as a component."""
    a = assess(
        probabilities=result.probabilities,
        thresholds=result.thresholds,
        label=result.label,
        inconclusive=result.inconclusive,
        category=result.category,
        p_malignant=result.p_malignant,
        mode=result.mode,
    )
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"frame-{n}",
        "identifier": [{"system": RESULT_ID_SYSTEM, "value": result.result_id}],
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging", "display": "Imaging"}]}],
        "code": {
            "coding": [{"system": CODE_SYSTEM, "code": "frame-probability-malignant", "display": "Model probability of malignancy for one frame"}],
            "text": f"Frame {n}: {a.category.wording}",
        },
        "effectiveDateTime": result.created_at,
        "device": {"display": f"{result.site}/{result.device_id} {result.model_name} {result.model_version}"},
        "interpretation": [_class_code(a.category.value)],
        "component": [
            {
                "code": {"coding": [{"system": CODE_SYSTEM, "code": f"probability-{cls}", "display": f"Model probability of class '{cls}'"}]},
                "valueQuantity": {"value": round(float(p), 6), "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"},
            }
            for cls, p in sorted(result.probabilities.items())
        ],
    }
    if a.p_malignant is not None:
        obs["valueQuantity"] = {"value": round(float(a.p_malignant), 6), "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"}
    if a.threshold is not None:
        obs["referenceRange"] = [
            {
                "low": {"value": float(a.threshold), "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"},
                "text": "malignant decision threshold",
            }
        ]
    if result.patient_ref:
        obs["subject"] = {"identifier": {"system": PATIENT_REF_SYSTEM, "value": result.patient_ref}}
    site = body_site(result)
    if site:
        obs["bodySite"] = {"text": site}
    return obs


def exam_report(exam_id: str, results: Sequence[StoredResult]) -> dict[str, Any]:
    """Every frame of one exam (in the order they were created) as one DiagnosticReport."""
    if not results:
        raise ValueError(f"exam {exam_id!r} has no results")
    frames = sorted(results, key=lambda r: (r.created_at, r.id))
    observations = [_frame_observation(n, r) for n, r in enumerate(frames, start=1)]
    assessments = [
        assess(
            probabilities=r.probabilities,
            thresholds=r.thresholds,
            label=r.label,
            inconclusive=r.inconclusive,
            category=r.category,
            p_malignant=r.p_malignant,
            mode=r.mode,
        )
        for r in frames
    ]
    scores = [a.p_malignant for a in assessments if a.p_malignant is not None]
    suspicious = sum(a.suspicious for a in assessments)
    worst = f"highest p(malignant) {100 * max(scores):.1f} %" if scores else "no p(malignant) sent"
    first, last = frames[0], frames[-1]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": "exam-" + "".join(c if c.isalnum() or c in "-." else "-" for c in exam_id)[:58],
        "meta": {"tag": [{"system": CODE_SYSTEM, "code": "decision-support", "display": DISCLAIMER}]},
        "contained": observations,
        "identifier": [{"system": EXAM_ID_SYSTEM, "value": exam_id}],
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]}],
        "code": {
            "coding": [{"system": CODE_SYSTEM, "code": "breast-us-ai-exam", "display": "Breast ultrasound AI classification, whole exam"}],
            "text": "Breast ultrasound AI classification of an exam (decision support)",
        },
        "effectivePeriod": {"start": first.created_at, "end": last.created_at},
        "issued": max(r.received_at for r in frames),
        "performer": [{"display": f"sonopi device {first.site}/{first.device_id}"}],
        "result": [{"reference": f"#{obs['id']}", "display": obs["code"]["text"]} for obs in observations],
        "conclusion": f"{len(frames)} frame(s), {suspicious} suspicious; {worst}. {DISCLAIMER}.",
        "conclusionCode": [
            _class_code(
                "suspicious" if suspicious else max((a.category.value for a in assessments), key=["no_lesion", "inconclusive", "low_suspicion"].index)
            )
        ],
        "extension": [{"url": f"{SYSTEM}:frames", "valueInteger": len(frames)}],
    }
    patients = sorted({r.patient_ref for r in frames if r.patient_ref})
    if len(patients) == 1:
        report["subject"] = {"identifier": {"system": PATIENT_REF_SYSTEM, "value": patients[0]}}
    ages = sorted({r.age for r in frames if r.age is not None})
    if len(ages) == 1:
        report["extension"].append(_age(ages[0]))  # every frame that gives an age gives this one
    return report
