"""Result schema 3: the lesion outline travels device -> hub (issue 16).

It proves that:
- a result stored with an outline (in mm, in pixels, none outlined, withheld) is sent as schema 3 with the stored
  ``lesion`` object as it is and the crop box its thumbnail shows; one stored without an outline goes as schema 2
  (byte for byte the message it was before: no ``lesion``, no ``crop``) and one stored before the category rule as 1;
- the contract refuses a malformed outline with a detail naming the key (never the value): too many points,
  coordinates out of range, mm without a spacing, a spacing without mm, unknown descriptor values, an empty box, an
  outline with "none outlined", unknown keys, and ``lesion``/``crop`` in a schema-1 or schema-2 result;
- end to end, real everywhere (the Analyzer with the tiny segmentation bundle and a clinician's ROI -> the device's
  store -> ``python -m device uplink`` -> Mosquitto -> ``python -m hub serve`` -> SQLite and PostgreSQL): every
  outline arrives and is stored identically (with the crop box, at schema 3; the result without one at schema 2),
  an identical re-send is a duplicate (acked again, stored once), and a re-send with another outline is refused as a
  ``duplicate_conflict`` naming ``lesion``, the first outline staying.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from device.analysis import Analyzer
from device.config import parse_config
from device.engine import Classifier
from device.lesion_record import Descriptor, LesionRecord
from device.link.contract import ContractError, decode_result, encode_result
from device.link.uplink.outbox import message_from_record
from device.model.bundle import load_bundle
from device.results import CapturedFrame, Exam, ExamDesk, new_result_id
from device.sources.base import Frame
from device.spacing import PixelSpacing
from device.store import ResultStore
from tests.device.link.test_uplink import Device
from tests.device.tiny_segmentation import lesion_frame
from tests.hub.test_hub_poison import HubProcess
from tests.hub.test_hub_service import RawDevice
from tests.mqtt_broker import MosquittoBroker, mosquitto_broker, postgres_server, wait_for  # noqa: F401  (fixtures)

SITE, DEVICE = "site-a", "dev-1"
TOPIC = f"sonopi/v1/{SITE}/{DEVICE}/result"
ROI = (100, 60, 320, 200)  # the clinician's region: the crop, so the thumbnail, starts at (100, 60) in the frame

OUTLINE = LesionRecord(
    found=True,
    box=(180, 110, 141, 81),
    contour=((180, 150), (250, 110), (320, 150), (250, 190)),
    area_px=8800.0,
    width_mm=28.2,
    depth_mm=16.2,
    area_mm2=352.0,
    spacing_mm=(0.2, 0.2),
    orientation=Descriptor("parallel", False),
    shape=Descriptor("oval", True),
    margin=Descriptor("circumscribed", False),
)
IN_PIXELS = replace(OUTLINE, width_mm=None, depth_mm=None, area_mm2=None, spacing_mm=None)


def v2_record(lesion: LesionRecord | None, crop: tuple[int, int, int, int] | None = ROI):
    from tests.device.link.test_contract_v2 import v2_record as base

    return replace(base(SITE, DEVICE, 4), lesion=lesion, crop=crop)


def message(lesion: LesionRecord | None = OUTLINE, **changes: object):
    return replace(message_from_record(v2_record(lesion), historical=False, prev_result_id=None), **changes)


# --- the contract ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lesion", [OUTLINE, IN_PIXELS, LesionRecord(found=False), LesionRecord(found=False, withheld="inconclusive")])
def test_a_result_stored_with_an_outline_travels_as_schema_3(lesion: LesionRecord) -> None:
    m = message(lesion)
    payload = json.loads(encode_result(m))
    assert payload["schema"] == 3 and payload["lesion"] == lesion.to_json() and payload["crop"] == list(ROI)
    back = decode_result(TOPIC, encode_result(m))
    assert back == m and back.lesion == lesion and back.crop == ROI


def test_a_result_stored_without_an_outline_travels_as_before() -> None:
    without = message(None)
    payload = json.loads(encode_result(without))
    assert payload["schema"] == 2 and not {"lesion", "crop"} & set(payload)  # the schema-2 message it always was
    assert decode_result(TOPIC, encode_result(without)).lesion is None
    before_categories = replace(v2_record(None), category=None, p_malignant=None, mode=None)
    assert message_from_record(before_categories, historical=False, prev_result_id=None).schema == 1


def _payload(**lesion_changes: object) -> dict:
    payload = message(OUTLINE).to_payload()
    payload["lesion"].update(lesion_changes)
    return payload


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (_payload(contour=[[i, i % 7] for i in range(65)]), "result lesion/contour: more than 64 items"),
        (_payload(contour=[[10, 20], [70000, 20], [30, 40]]), "result lesion/contour/1/0: above the maximum 65535"),
        (_payload(contour=[[10, 20], [-1, 20], [30, 40]]), "result lesion/contour/1/0: below the minimum 0"),
        (_payload(spacing_mm=None), "result lesion/width_mm: must be null"),  # mm figures without a spacing
        (_payload(width_mm=None, depth_mm=None, area_mm2=None), "result lesion/width_mm: must be number"),  # a spacing, no mm
        (_payload(spacing_mm=[0.2, 9.0]), "result lesion/spacing_mm/1: above the maximum 5"),
        (_payload(shape={"value": "lobulated", "shown": True}), "result lesion/shape/value: must be one of"),
        (_payload(margin={"value": "circumscribed"}), "result lesion/margin: missing required shown"),
        (_payload(box=[1, 2, 0, 4]), "result lesion/box: a box needs a width and height of at least 1"),
        (_payload(found=False), "result lesion/"),  # "none outlined" yet an outline
        (_payload(area_px=0), "result lesion/area_px: below the minimum 0 (exclusive)"),
        (_payload(withheld="inconclusive"), "result lesion/withheld: must be null"),
        (_payload(colour="crimson"), "result lesion: 1 unexpected property (colour)"),
        ({**message(OUTLINE).to_payload(), "crop": [100, 60, 0, 200]}, "result crop: a box needs a width and height of at least 1"),
        ({**message(None).to_payload(), "lesion": OUTLINE.to_json()}, "result (root): lesion not allowed in a schema-2 result"),
        ({**message(None).to_payload(), "crop": list(ROI)}, "result (root): crop not allowed in a schema-2 result"),
    ],
)
def test_a_malformed_outline_is_refused_naming_the_key(payload: dict, where: str) -> None:
    with pytest.raises(ContractError) as caught:
        decode_result(TOPIC, json.dumps(payload).encode())
    assert caught.value.detail.startswith(where), caught.value.detail
    assert "lobulated" not in caught.value.detail and "crimson" not in caught.value.detail  # the rule, never the value


def test_a_message_built_in_code_with_an_outline_at_an_older_schema_is_refused() -> None:
    with pytest.raises(ContractError, match="result lesion: a schema-2 result may not carry it"):
        encode_result(message(OUTLINE, schema=2))
    with pytest.raises(ContractError, match="result lesion/box: a box needs"):
        encode_result(message(replace(OUTLINE, box=(1, 2, 3, 0))))


# --- end to end ------------------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "hub.sqlite")
    return request.getfixturevalue("postgres_server").create_database(f"lesion_{uuid.uuid4().hex[:10]}")


def analyse(store: ResultStore, bundle: Path, tmp_path: Path) -> list:
    """Three frames through the real Analyzer (tiny segmentation bundle, the clinician's ROI) into the device's store:
    an outline in mm (a DICOM spacing), one in pixels, and a Doppler frame (inconclusive: its outline withheld)."""
    import numpy as np

    config = parse_config(
        {
            "device": {"id": DEVICE, "site": SITE, "data_dir": str(tmp_path / "analyzer")},
            "model": {"path": str(bundle)},
            "source": {"auto_crop": False, "roi": list(ROI)},
            "store": {"keep_images_days": 0},
        }
    )
    desk = ExamDesk()
    desk.open(Exam("E-LESION", "P-LESION"))
    analyzer = Analyzer(config, Classifier(load_bundle(bundle), threads=1), store, desk)
    doppler = np.repeat(lesion_frame(300, 500, (250, 150), (70, 40))[:, :, None], 3, axis=2)
    doppler[70:170, 110:260] = (200, 30, 30)
    frames = [
        Frame(lesion_frame(300, 500, (250, 150), (70, 40)), "scan.dcm", 0, spacing=PixelSpacing(0.2, 0.25)),
        Frame(lesion_frame(300, 500, (230, 140), (50, 45), seed=1), "scan.png", 1),
        Frame(doppler, "doppler.png", 2),
    ]
    return [analyzer.record(CapturedFrame(frame, "E-LESION"), analyzer.classify(frame)) for frame in frames]


@pytest.mark.timeout(300)
def test_outlines_travel_from_the_analyzer_to_the_hub_identically(
    seg_bundle_dir: Path, tmp_path: Path, mosquitto_broker: MosquittoBroker, hub_target: str
) -> None:
    hub = HubProcess(tmp_path, mosquitto_broker.address, hub_target)
    device = Device(tmp_path, SITE, DEVICE, mosquitto_broker.address)
    raw = None
    try:
        records = analyse(device.store, seg_bundle_dir, tmp_path)
        mm, px, withheld = (r.lesion for r in records)
        assert mm.found and mm.calibrated and px.found and not px.calibrated and withheld.withheld == "inconclusive"
        assert all(r.crop == ROI for r in records)
        plain = device.store.add(replace(records[1], result_id=new_result_id(), seq=None, lesion=None))  # no segmentation model
        records.append(plain)
        hub.start()
        device.start_uplink()
        hub.wait(lambda: hub.store.count_results() == 4, "four results at the hub", timeout_s=60)
        wait_for(lambda: device.store.backlog().pending == 0, 30, "every ack")
        for record in records:
            row = hub.store.result(record.result_id)
            assert row.lesion == record.lesion, record.result_id
            assert row.crop == (record.crop if record.lesion is not None else None)
            assert row.schema_version == (3 if record.lesion is not None else 2)
        stored = hub.store.result(records[0].result_id)
        assert stored.lesion.to_json() == device.store.get(records[0].result_id).lesion.to_json()  # identical, field by field

        raw = RawDevice(mosquitto_broker, SITE, DEVICE)  # the same device re-sending: identical, then altered
        again = message_from_record(device.store.get(records[0].result_id), historical=True, prev_result_id=None)
        raw.publish(encode_result(again))
        hub.wait(lambda: again.result_id in raw.acks(), "the identical re-send's ack")
        assert hub.store.count_results() == 4 and hub.rejected() == 0
        altered = replace(again, lesion=replace(again.lesion, area_px=again.lesion.area_px + 1))
        raw.publish(encode_result(altered))
        hub.wait(lambda: any(r.result_id == again.result_id for r in raw.nacks()), "the altered re-send's nack")
        refusal = next(r for r in raw.nacks() if r.result_id == again.result_id)
        assert refusal.reason == "duplicate_conflict" and "lesion" in refusal.detail
        assert hub.store.result(again.result_id).lesion == records[0].lesion and hub.alive
    finally:
        if raw is not None:
            raw.close()
        if device.proc is not None:
            device.stop_uplink()
        device.store.close()
        hub.close()
