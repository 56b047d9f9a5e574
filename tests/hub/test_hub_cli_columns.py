"""The hub CLI's CSV export (hub/cli.py EXPORT_FIELDS, a file format with its own column order) carries every field
of a stored result's summary — the model as three columns — and the correction state, so a field added to the
hub's results cannot be left out of the export unnoticed."""

from __future__ import annotations

from device.link.corrections import Place, effective_placement
from hub.cli import EXPORT_FIELDS, placement_fields
from hub.store import StoredResult


def _result() -> StoredResult:
    return StoredResult(
        id=1,
        result_id="r",
        seq=1,
        prev_result_id=None,
        site="s",
        device_id="d",
        created_at="c",
        received_at="c",
        historical=False,
        exam_id=None,
        patient_ref=None,
        side=None,
        model_name="m",
        model_version="1",
        model_sha256="a" * 64,
        label=None,
        inconclusive=True,
        reasons=(),
        probabilities={},
        thresholds={},
        latency_ms=None,
        thumbnail=None,
        schema_version=2,
    )


def test_every_summary_field_is_exported_in_its_order() -> None:
    summary = list(_result().summary())
    i = summary.index("model")
    expected = [*summary[:i], "model_name", "model_version", "model_sha256", *summary[i + 1 :]]
    placement = list(placement_fields(effective_placement(Place(None, None, None), [])))
    assert list(EXPORT_FIELDS) == expected + placement
