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

from device.contract import HeartbeatMessage, ResultMessage, StatusMessage
from hub.store import HubStore

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


def demo_result(i: int, site: str, device_id: str, created: datetime, rng: random.Random,
                spec: DemoSpec = DemoSpec(), thumbnail: bytes | None = None) -> ResultMessage:
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
        result_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), seq=i, device_id=device_id, site=site,
        created_at=_iso(created), model_name="sonopi-lite0", model_version=spec.model_version, model_sha256=SHA,
        probabilities=probabilities, label=None if inconclusive else label, inconclusive=inconclusive,
        reasons=reasons, thresholds={"malignant": 0.35, "min_confidence": 0.6}, exam_id=exam_id,
        patient_ref=_demo_patient(exam_id, rng), side=rng.choice(("L", "R")),
        latency_ms=round(rng.uniform(60, 140), 1), historical=rng.random() < 0.05, thumbnail=thumbnail,
    )


def seed_results(store: HubStore, count: int, *, spec: DemoSpec = DemoSpec(), seed: int = 7,
                 end: datetime | None = None, span: timedelta = timedelta(days=120), batch: int = 2000) -> int:
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


def seed_device_states(store: HubStore, spec: DemoSpec = DemoSpec(), now: datetime | None = None) -> None:
    """Status and heartbeats so the devices page shows online, silent and offline devices."""
    moment = now or datetime.now(UTC)
    for n, (site, device_id) in enumerate(device_ids(spec)):
        state = "offline" if n % 5 == 4 else "online"
        store.record_status(StatusMessage(state="online", device_id=device_id, site=site, at=_iso(moment),
                                          software_version="0.4.1", model={"name": "sonopi-lite0",
                                          "version": spec.model_version, "sha256": SHA}, backlog=0))
        silent = n % 5 == 2
        heard = moment - (timedelta(minutes=9) if silent else timedelta(seconds=20))
        store.record_heartbeat(HeartbeatMessage(device_id=device_id, site=site, at=_iso(heard), interval_s=60.0,
                                                uptime_s=86400.0 + n * 3600, backlog=n * 7 if silent else n % 3,
                                                oldest_pending_age_s=540.0 if silent else (35.0 if n % 3 else None)),
                               received_at=_iso(heard))
        if state == "offline":
            store.record_status(StatusMessage(state="offline", device_id=device_id, site=site, at=_iso(moment)),
                                received_at=_iso(moment))
