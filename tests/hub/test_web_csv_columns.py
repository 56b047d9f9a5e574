"""The web console's CSV (hub/web/inbox.py): the header (csv_fields) and each row (csv_record) name the same columns,
a probability column per class included, so a column added to one and not the other fails here instead of being
dropped from the file (an extra key is never written) or failing an export at its first row."""

from __future__ import annotations

from hub.web.inbox import KNOWN_LABELS, InboxRow, csv_fields, csv_record


def test_the_header_and_a_row_name_the_same_columns() -> None:
    row = InboxRow(
        id=1,
        result_id="r",
        site="s",
        device_id="d",
        created_at="2026-01-01T00:00:00Z",
        received_at="2026-01-01T00:00:01Z",
        historical=False,
        exam_id="E1",
        patient_ref="P",
        side="L",
        model_version="1",
        label="benign",
        inconclusive=False,
        probabilities={"benign": 0.6, "malignant": 0.3, "normal": 0.1},
        thresholds={"malignant": 0.35},
        review="unreviewed",
        clock=3,
        age=50,
    )
    for classes in (KNOWN_LABELS, ("benign", "malignant")):
        assert set(csv_record(row, classes)) == set(csv_fields(classes))
