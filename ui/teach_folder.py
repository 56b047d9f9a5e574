"""The frames a clinician marked "Normal scan — use to teach", kept on the device until the scanner is taught.

``<data_dir>/teach/cases/`` is a folder as ``device site-adapt`` reads one: a copy of each marked result's full
frame (``<result_id>.png``, from the store's ``frames`` table, which ``[store] keep_images_days`` purges — so the
copy is made at once) and ``labels.csv`` (``filename,label,patient_id,exam_id,result_id,marked_at``; label always
``normal``; ``patient_id`` a hash of the patient reference, so the held-out check splits by patient without a
second copy of the reference). The store's results are only read: marking never changes a stored result, and
nothing here is sent to the hub. Files are written to a temporary name, synced and renamed, so a power cut
leaves the previous state or the new one.

``<data_dir>/teach/state.json`` remembers the base bundle (the ``[model] path`` in use when the scanner was first
taught) and the site bundle switched to, for *Undo: back to the base model*.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from device.atomic_file import write_atomic
from device.errors import SonopiError
from device.site_adapt import MIN_NORMALS, MIN_PATIENTS
from device.store import ResultStore

log = logging.getLogger(__name__)

RECOMMENDED_NORMALS = 200  # docs/device.md, "Site onboarding"
FIELDS = ("filename", "label", "patient_id", "exam_id", "result_id", "marked_at")


class TeachError(SonopiError):
    """A mark that cannot be made (the exam is still open, its frames are gone) or a teach folder that is unreadable."""

    code = "teach_refused"


@dataclass(frozen=True)
class Mark:
    filename: str
    patient_id: str
    exam_id: str
    result_id: str
    marked_at: str


@dataclass(frozen=True)
class MarkOutcome:
    added: int
    no_frame: int  # results whose full frame is no longer (or never was) kept: keep_images_days
    inconclusive: int  # frames the quality gate refused: useless for teaching, not copied


@dataclass(frozen=True)
class Progress:
    frames: int
    patients: int
    exams: int

    @property
    def enough(self) -> bool:
        return self.frames >= MIN_NORMALS and self.patients >= MIN_PATIENTS

    def text(self) -> str:
        return (
            f"<b>{self.frames}</b> normal frame(s) from <b>{self.patients}</b> patient(s) marked · needed: "
            f"{MIN_NORMALS} frames from {MIN_PATIENTS} patients · about {RECOMMENDED_NORMALS} recommended"
        )


def patient_key(patient_ref: str) -> str:
    return "p" + hashlib.sha256(patient_ref.encode("utf-8")).hexdigest()[:12]


class TeachFolder:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "teach"
        self.cases = self.root / "cases"
        self.bundles = Path(data_dir) / "site-bundles"
        self.labels = self.cases / "labels.csv"
        self.state_file = self.root / "state.json"

    # --- marks ---------------------------------------------------------------------------------------

    def marks(self) -> list[Mark]:
        if not self.labels.is_file():
            return []
        try:
            with open(self.labels, newline="", encoding="utf-8") as fh:
                return [Mark(r["filename"], r["patient_id"], r["exam_id"], r["result_id"], r["marked_at"]) for r in csv.DictReader(fh)]
        except (OSError, KeyError, csv.Error) as exc:
            raise TeachError(f"{self.labels}: cannot read the marked frames ({exc})") from exc

    def marked_exams(self) -> set[str]:
        return {m.exam_id for m in self.marks()}

    def progress(self) -> Progress:
        marks = self.marks()
        return Progress(len(marks), len({m.patient_id for m in marks}), len({m.exam_id for m in marks}))

    def _save(self, marks: Iterable[Mark]) -> None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        for m in marks:
            writer.writerow([m.filename, "normal", m.patient_id, m.exam_id, m.result_id, m.marked_at])
        write_atomic(self.labels, out.getvalue().encode("utf-8"))

    def mark_exam(self, store: ResultStore, exam_id: str, open_exam_id: str | None) -> MarkOutcome:
        """Copy every conclusive frame of the finished exam ``exam_id`` into the teach folder as ``normal``."""
        if exam_id == open_exam_id:
            raise TeachError(f"exam {exam_id} is still open: finish it first, then mark it normal")
        exam = store.get_exam(exam_id)
        if exam is None:
            raise TeachError(f"exam {exam_id}: not in the store")
        self.cases.mkdir(parents=True, exist_ok=True)
        marks = self.marks()
        have = {m.result_id for m in marks}
        added = no_frame = inconclusive = 0
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for record in store.history(exam_id=exam_id, newest_first=False):
            if record.result_id in have:
                continue
            if record.inconclusive:
                inconclusive += 1
                continue
            png = store.frame(record.result_id)
            if png is None:
                no_frame += 1
                continue
            filename = f"{record.result_id}.png"
            write_atomic(self.cases / filename, png)
            marks.append(Mark(filename, patient_key(exam.patient_ref), exam_id, record.result_id, now))
            added += 1
        self._save(marks)
        log.info(
            "exam %s marked normal for teaching: %d frame(s) added (%d without a kept frame, %d inconclusive)", exam_id, added, no_frame, inconclusive
        )
        return MarkOutcome(added, no_frame, inconclusive)

    def unmark_exam(self, exam_id: str) -> int:
        marks = self.marks()
        keep = [m for m in marks if m.exam_id != exam_id]
        self._save(keep)
        for m in marks:
            if m.exam_id == exam_id:
                (self.cases / m.filename).unlink(missing_ok=True)
        return len(marks) - len(keep)

    # --- the base and the site bundle ------------------------------------------------------------------

    def state(self) -> dict[str, str | None]:
        if not self.state_file.is_file():
            return {}
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TeachError(f"{self.state_file}: unreadable ({exc})") from exc
        return {k: data.get(k) for k in ("base_path", "site_path")}

    def set_state(self, base_path: Path, site_path: Path | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {"base_path": str(base_path), "site_path": None if site_path is None else str(site_path)}
        write_atomic(self.state_file, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    def new_bundle_dir(self) -> Path:
        self.bundles.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        out, n = self.bundles / f"site-{stamp}", 1
        while out.exists():
            n += 1
            out = self.bundles / f"site-{stamp}-{n}"
        return out
