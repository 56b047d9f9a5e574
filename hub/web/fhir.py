"""A hub result as a FHIR R4 ``DiagnosticReport`` with one contained ``Observation`` per class probability.

Status is always ``preliminary``: the output is decision support, not a diagnosis, and the
``conclusion`` says so. Codes are local (``urn:sonopi:...``) rather than guessed LOINC/SNOMED codes; a
hospital's interface engine maps them. The patient is referenced by identifier only (the clinic's
reference as entered on the device), never by name.
"""

from __future__ import annotations

from typing import Any

from hub.store import StoredResult
from hub.web import DISCLAIMER

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
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [{"system": CODE_SYSTEM, "code": f"probability-{cls}",
                             "display": f"Model probability of class '{cls}'"}],
                 "text": f"Probability: {cls}"},
        "effectiveDateTime": result.created_at,
        "valueQuantity": {"value": round(float(probability), 6), "unit": "probability",
                          "system": "http://unitsofmeasure.org", "code": "1"},
        "device": {"display": f"{result.site}/{result.device_id} {result.model_name} {result.model_version}"},
    }
    if result.patient_ref:
        obs["subject"] = {"identifier": {"system": PATIENT_REF_SYSTEM, "value": result.patient_ref}}
    if cls in result.thresholds:
        obs["referenceRange"] = [{"low": {"value": float(result.thresholds[cls]), "unit": "probability",
                                          "system": "http://unitsofmeasure.org", "code": "1"},
                                  "text": "decision threshold"}]
    if result.side in SIDE_TEXT:
        obs["bodySite"] = {"text": SIDE_TEXT[result.side]}
    return obs


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
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"coding": [{"system": CODE_SYSTEM, "code": "breast-us-ai-classification",
                             "display": "Breast ultrasound AI classification"}],
                 "text": "Breast ultrasound AI classification (decision support)"},
        "effectiveDateTime": result.created_at,
        "issued": result.received_at,
        "performer": [{"display": f"sonopi device {result.site}/{result.device_id}"}],
        "result": [{"reference": f"#{obs['id']}", "display": obs["code"]["text"]} for obs in observations],
        "conclusion": conclusion(result),
        "conclusionCode": [_class_code("inconclusive" if result.inconclusive else str(result.label))],
        "extension": [
            {"url": f"{SYSTEM}:model", "valueString":
                f"{result.model_name} {result.model_version} sha256:{result.model_sha256}"},
            {"url": f"{SYSTEM}:delivered-late", "valueBoolean": bool(result.historical)},
        ],
    }
    if result.patient_ref:
        report["subject"] = {"identifier": {"system": PATIENT_REF_SYSTEM, "value": result.patient_ref}}
    if result.exam_id:
        report["identifier"].append({"system": EXAM_ID_SYSTEM, "value": result.exam_id})
    return report
