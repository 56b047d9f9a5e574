"""Synthetic, contract-valid results and device states for the console's screenshots, tests and benchmark.

Nothing here is clinical data: patient references look like ``DEMO-0042``.
"""

from __future__ import annotations

import io
import random
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypedDict

from device.link.contract import DeviceStatus, HeartbeatMessage, ResultMessage, StatusMessage
from hub.store import HubStore, StoredResult

SHA = "5f" * 32
CLASSES = ("benign", "malignant", "normal")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def demo_thumbnail(seed: int = 0, size: int = 160) -> bytes:
    """A small grey JPEG that looks vaguely like an ultrasound sector (Pillow)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    draw.pieslice((-size // 2, -size, size * 3 // 2, size), 50, 130, fill=70)  # the probe's fan
    for _ in range(1500):  # speckle inside the fan
        x, y = rng.randrange(size), rng.randrange(size // 8, size)
        if abs(x - size / 2) < y * 0.8:
            draw.point((x, y), fill=rng.randrange(60, 200))
    cx, cy = rng.randrange(2 * size // 5, 3 * size // 5), rng.randrange(size // 2, 3 * size // 4)
    draw.ellipse((cx - 18, cy - 12, cx + 18, cy + 12), fill=15)
    out = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(1.2)).save(out, "JPEG", quality=70)
    return out.getvalue()


@dataclass(frozen=True)
class DemoSpec:
    sites: tuple[str, ...] = ("st-marys", "north-clinic", "riverside")
    devices_per_site: int = 2
    model_version: str = "1.3.0"
    thumbnail_every: int = 0  # 0: no thumbnails


def device_ids(spec: DemoSpec) -> list[tuple[str, str]]:
    return [(site, f"pi-{site[:5]}-{n + 1}") for site in spec.sites for n in range(spec.devices_per_site)]


def _demo_patient(exam_id: str, rng: random.Random) -> str:
    """One patient per exam (three frames each); the draw keeps the other fields' random stream as it was."""
    rng.randrange(10_000)
    return f"DEMO-{zlib.crc32(exam_id.encode()) % 10_000:04d}"


def demo_result(
    i: int, site: str, device_id: str, created: datetime, rng: random.Random, spec: DemoSpec = DemoSpec(), thumbnail: bytes | None = None
) -> ResultMessage:
    exam_id = f"{device_id}-EX-{i // 3:05d}"  # unique across devices, like the devices' own exam ids
    roll = rng.random()
    label = "malignant" if roll < 0.2 else ("benign" if roll < 0.7 else "normal")
    top = rng.uniform(0.62, 0.97)
    rest = [c for c in CLASSES if c != label]
    split = rng.uniform(0.2, 0.8)
    probabilities = {label: round(top, 4), rest[0]: round((1 - top) * split, 4), rest[1]: round((1 - top) * (1 - split), 4)}
    inconclusive = rng.random() < 0.08
    reasons: tuple[str, ...] = ()
    if inconclusive:
        reasons = (rng.choice(("low_confidence", "poor_quality", "no_scan_region")),)
    return ResultMessage(
        result_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        seq=i,
        device_id=device_id,
        site=site,
        created_at=_iso(created),
        model_name="sonopi-lite0",
        model_version=spec.model_version,
        model_sha256=SHA,
        probabilities=probabilities,
        label=None if inconclusive else label,
        inconclusive=inconclusive,
        reasons=reasons,
        thresholds={"malignant": 0.35, "min_confidence": 0.6},
        exam_id=exam_id,
        patient_ref=_demo_patient(exam_id, rng),
        side=rng.choice(("L", "R")),
        latency_ms=round(rng.uniform(60, 140), 1),
        historical=rng.random() < 0.05,
        thumbnail=thumbnail,
    )


def seed_results(
    store: HubStore,
    count: int,
    *,
    spec: DemoSpec = DemoSpec(),
    seed: int = 7,
    end: datetime | None = None,
    span: timedelta = timedelta(days=120),
    batch: int = 2000,
) -> int:
    """Store ``count`` results spread over ``span`` before ``end``, oldest first, in batches."""
    rng = random.Random(seed)
    ids = device_ids(spec)
    seqs = {pair: 0 for pair in ids}
    start = (end or datetime.now(UTC)) - span
    step = span / max(count, 1)
    thumb = demo_thumbnail(seed) if spec.thumbnail_every else None
    pending: list[ResultMessage] = []
    stored = 0
    for i in range(count):
        site, device_id = ids[rng.randrange(len(ids))]
        seqs[(site, device_id)] += 1
        with_thumb = thumb if spec.thumbnail_every and i % spec.thumbnail_every == 0 else None
        pending.append(demo_result(seqs[(site, device_id)], site, device_id, start + step * i, rng, spec, with_thumb))
        if len(pending) >= batch:
            stored += sum(store.add_results(pending))
            pending = []
    if pending:
        stored += sum(store.add_results(pending))
    return stored


def seed_results_as_delivered(
    store: HubStore, count: int, *, spec: DemoSpec = DemoSpec(), seed: int = 7, end: datetime | None = None, span: timedelta = timedelta(days=120)
) -> int:
    """Like :func:`seed_results` (the same results), but each stored as the hub would have received it: 2 s
    after it was created, the ``historical`` ones (from a backlog) only at ``end`` (late). One transaction per
    result: for screenshots, not for 100,000."""
    moment = end or datetime.now(UTC)
    scratch = HubStore.open(":memory:")
    try:
        seed_results(scratch, count, spec=spec, seed=seed, end=moment, span=span)
        messages = scratch.results(limit=None, newest_first=False)
    finally:
        scratch.close()
    stored = 0
    for r in messages:
        created = datetime.fromisoformat(r.created_at)
        arrived = moment if r.historical else min(moment, created + timedelta(seconds=2))
        stored += sum(store.add_results([_message(r)], received_at=_iso(arrived)))
    return stored


def _message(r: StoredResult) -> ResultMessage:
    return ResultMessage(
        result_id=r.result_id,
        seq=r.seq,
        device_id=r.device_id,
        site=r.site,
        created_at=r.created_at,
        model_name=r.model_name,
        model_version=r.model_version,
        model_sha256=r.model_sha256,
        probabilities=r.probabilities,
        label=r.label,
        inconclusive=r.inconclusive,
        reasons=r.reasons,
        thresholds=r.thresholds,
        exam_id=r.exam_id,
        patient_ref=r.patient_ref,
        side=r.side,
        latency_ms=r.latency_ms,
        historical=r.historical,
        thumbnail=r.thumbnail,
    )


# (disk free bytes, SoC temperature, throttled mask) per demo device, in turn: healthy, overheating and
# soft-limited now, disk almost full, under-voltage since boot, nothing reported, healthy.
HEALTH: tuple[tuple[int | None, float | None, str | None], ...] = (
    (21 * 1024**3, 52.0, "0x0"),
    (9 * 1024**3, 81.5, "0x80008"),
    (300 * 1024**2, 61.0, "0x0"),
    (14 * 1024**3, 58.0, "0x50000"),
    (None, None, None),
    (30 * 1024**3, 49.0, "0x0"),
)


class DeviceState(TypedDict, total=False):
    """The heartbeat's optional model/source state fields (HeartbeatMessage)."""

    model_state: str
    model_detail: str
    source_state: str
    source_detail: str


# The heartbeat's model/source state per device index (the others: both ok).
DEVICE_STATES: dict[int, DeviceState] = {
    3: {"model_state": "ok", "source_state": "lost", "source_detail": "/dev/video0: no such device"},
    5: {
        "model_state": "rejected",
        "model_detail": "model bundle /opt/sonopi/models/sonopi-lite0: model.tflite sha256 does not match the manifest",
        "source_state": "ok",
    },
}


def seed_device_states(store: HubStore, spec: DemoSpec = DemoSpec(), now: datetime | None = None) -> None:
    """Status and heartbeats so the devices page shows online, silent and offline devices."""
    moment = now or datetime.now(UTC)
    for n, (site, device_id) in enumerate(device_ids(spec)):
        state = "offline" if n % 5 == 4 else "online"
        store.record_status(
            StatusMessage(
                state=DeviceStatus.ONLINE,
                device_id=device_id,
                site=site,
                at=_iso(moment),
                software_version="0.4.1",
                model={"name": "sonopi-lite0", "version": spec.model_version, "sha256": SHA},
                backlog=0,
            )
        )
        silent = n % 5 == 2
        heard = moment - (timedelta(minutes=9) if silent else timedelta(seconds=20))
        disk, temp, throttled = HEALTH[n % len(HEALTH)]
        store.record_heartbeat(
            HeartbeatMessage(
                device_id=device_id,
                site=site,
                at=_iso(heard),
                interval_s=60.0,
                uptime_s=86400.0 + n * 3600,
                backlog=n * 7 if silent else n % 3,
                oldest_pending_age_s=540.0 if silent else (35.0 if n % 3 else None),
                disk_free_bytes=disk,
                soc_temp_c=temp,
                throttled=throttled,
                **DEVICE_STATES.get(n, {"model_state": "ok", "source_state": "ok"}),
            ),
            received_at=_iso(heard),
        )
        if state == "offline":
            store.record_status(StatusMessage(state=DeviceStatus.OFFLINE, device_id=device_id, site=site, at=_iso(moment)), received_at=_iso(moment))


# --- a small, hand-made queue (the console's tests and screenshots) ---------------------------------------


@dataclass(frozen=True)
class QueueExamples:
    """Result ids of :func:`seed_queue_examples`, by what each one shows."""

    low_benign: str  # label benign, top class 63.1 %, p(malignant) 19.6 %: low suspicion
    suspicious: str  # p(malignant) 81 %, same exam as low_benign
    normal: str  # p(malignant) 3 %, same exam
    no_patient: str  # suspicious (52 %), sent without a patient reference
    no_patient_other: str  # the second frame of that exam (benign)
    inconclusive: str
    escalated: str  # suspicious (64 %), created 3 h ago, unreviewed
    live_late: str  # historical flag, but delivered 3 s after it was created: not late
    backlog_late: str  # delivered 2 h after it was created: late
    exam_with_patient: str
    exam_without_patient: str
    patient: str
    site: str = "st-marys"
    device: str = "pi-st-ma-1"


def _example(
    result_id: str,
    seq: int,
    created: datetime,
    probabilities: dict[str, float],
    label: str | None,
    *,
    exam_id: str | None,
    patient_ref: str | None,
    site: str,
    device_id: str,
    inconclusive: bool = False,
    historical: bool = False,
    thumbnail: bytes | None = None,
) -> ResultMessage:
    return ResultMessage(
        result_id=result_id,
        seq=seq,
        device_id=device_id,
        site=site,
        created_at=_iso(created),
        model_name="sonopi-lite0",
        model_version="1.3.0",
        model_sha256=SHA,
        probabilities=probabilities,
        label=None if inconclusive else label,
        inconclusive=inconclusive,
        reasons=("low_confidence: highest probability 0.41 is below 0.50",) if inconclusive else (),
        thresholds={"malignant": 0.35},
        exam_id=exam_id,
        patient_ref=patient_ref,
        side="L",
        latency_ms=90.0,
        historical=historical,
        thumbnail=thumbnail,
    )


def seed_queue_examples(store: HubStore, now: datetime | None = None, thumbnails: bool = True) -> QueueExamples:
    """Nine results that show each rule of the queue (see :class:`QueueExamples`), as the hub stored them."""
    moment = now or datetime.now(UTC)
    ids = [str(uuid.UUID(int=0xA000 + n, version=4)) for n in range(11)]
    site, device = "st-marys", "pi-st-ma-1"
    exam_a, exam_b = str(uuid.UUID(int=0xE1, version=4)), str(uuid.UUID(int=0xE2, version=4))
    patient = "PT-10452"
    thumb = (lambda n: demo_thumbnail(n)) if thumbnails else (lambda n: None)

    def minutes(m: float) -> datetime:
        return moment - timedelta(minutes=m)

    messages = [
        _example(
            ids[0],
            1,
            minutes(20),
            {"benign": 0.631, "malignant": 0.196, "normal": 0.173},
            "benign",
            exam_id=exam_a,
            patient_ref=patient,
            thumbnail=thumb(1),
            site=site,
            device_id=device,
        ),
        _example(
            ids[1],
            2,
            minutes(19),
            {"benign": 0.12, "malignant": 0.81, "normal": 0.07},
            "malignant",
            exam_id=exam_a,
            patient_ref=patient,
            thumbnail=thumb(2),
            site=site,
            device_id=device,
        ),
        _example(
            ids[2],
            3,
            minutes(18),
            {"benign": 0.05, "malignant": 0.03, "normal": 0.92},
            "normal",
            exam_id=exam_a,
            patient_ref=patient,
            thumbnail=thumb(3),
            site=site,
            device_id=device,
        ),
        _example(
            ids[3],
            4,
            minutes(15),
            {"benign": 0.40, "malignant": 0.52, "normal": 0.08},
            "malignant",
            exam_id=exam_b,
            patient_ref=None,
            thumbnail=thumb(4),
            site=site,
            device_id=device,
        ),
        _example(
            ids[4],
            5,
            minutes(14),
            {"benign": 0.70, "malignant": 0.20, "normal": 0.10},
            "benign",
            exam_id=exam_b,
            patient_ref=None,
            site=site,
            device_id=device,
        ),
        _example(
            ids[5],
            6,
            minutes(12),
            {"benign": 0.41, "malignant": 0.30, "normal": 0.29},
            None,
            exam_id=None,
            patient_ref="PT-20001",
            inconclusive=True,
            site=site,
            device_id=device,
        ),
        _example(
            ids[6],
            7,
            minutes(180),
            {"benign": 0.30, "malignant": 0.64, "normal": 0.06},
            "malignant",
            exam_id=None,
            patient_ref="PT-20002",
            site="riverside",
            device_id="pi-river-1",
        ),
        _example(
            ids[7],
            8,
            moment - timedelta(seconds=3),
            {"benign": 0.80, "malignant": 0.10, "normal": 0.10},
            "benign",
            exam_id=None,
            patient_ref="PT-20003",
            historical=True,
            site=site,
            device_id=device,
        ),
        _example(
            ids[8],
            9,
            minutes(120),
            {"benign": 0.85, "malignant": 0.05, "normal": 0.10},
            "benign",
            exam_id=None,
            patient_ref="PT-20004",
            historical=True,
            site=site,
            device_id=device,
        ),
    ]
    for message in messages:  # each reaches the hub 2 s after it was created; the last two arrive `now`
        created = datetime.fromisoformat(message.created_at)
        arrived = moment if message.result_id in ids[7:9] else min(moment, created + timedelta(seconds=2))
        store.add_results([message], received_at=_iso(arrived))
    return QueueExamples(
        low_benign=ids[0],
        suspicious=ids[1],
        normal=ids[2],
        no_patient=ids[3],
        no_patient_other=ids[4],
        inconclusive=ids[5],
        escalated=ids[6],
        live_late=ids[7],
        backlog_late=ids[8],
        exam_with_patient=exam_a,
        exam_without_patient=exam_b,
        patient=patient,
    )
