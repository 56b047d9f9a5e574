"""Fault banners (what is wrong and what to do) while the app keeps running: an unplugged capture
source, a rejected model, a full disk, a failed store write, an unreachable hub."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from device.config import parse_config
from device.errors import SourceError
from device.sources.base import Frame, FrameSource
from tests.mqtt_broker import free_port
from tests.ui_support import analyse, start_exam, tap
from ui.app import build_window, start


class CaptureCard(FrameSource):
    """A live source whose cable can be pulled: ``plugged.clear()`` makes reads fail like V4L2 does."""

    finite = False

    def __init__(self, plugged: threading.Event) -> None:
        super().__init__("v4l2:/dev/video-test")
        self.plugged = plugged
        self.index = 0
        self.rng = np.random.default_rng(0)

    def open(self) -> None:
        if not self.plugged.is_set():
            raise SourceError("/dev/video-test: no such device")

    def read(self) -> Frame | None:
        if not self.plugged.wait(0.02):
            raise SourceError("/dev/video-test: capture card unplugged")
        self.index += 1
        threading.Event().wait(1 / 60)  # a 60 fps card
        return Frame(self.rng.integers(0, 255, (240, 320), dtype=np.uint8), "/dev/video-test", self.index)


def make_config(tmp_path: Path, model: Path, **ui_and_uplink) -> object:
    return parse_config(
        {
            "device": {"data_dir": str(tmp_path / "data")},
            "model": {"path": str(model), "threads": 1},
            "source": {"spec": "v4l2:/dev/video-test", "reopen_interval_s": 0.1},
            "uplink": ui_and_uplink.pop("uplink", {"enabled": False}),
            "ui": ui_and_uplink,
        }
    )


def open_window(qtbot, config, opener=None):
    window = build_window(config, (800, 480), opener=opener)
    qtbot.addWidget(window)
    window.show()
    start(window)
    window.first_run.close_overlay()
    return window


def test_unplugged_source_shows_a_banner_and_recovers(qtbot, tmp_path: Path) -> None:
    plugged = threading.Event()
    plugged.set()
    config = make_config(tmp_path, tmp_path / "no-model")
    window = open_window(qtbot, config, opener=lambda spec: CaptureCard(plugged))
    try:
        qtbot.waitUntil(lambda: window.live.view.frame is not None, timeout=10_000)
        assert "source" not in window.banners.banners
        plugged.clear()
        qtbot.waitUntil(lambda: "source" in window.banners.banners, timeout=10_000)
        banner = window.banners.banners["source"].text.text()
        assert "Image source not available" in banner and "Check the cable" in banner
        assert window.status.source.plain == "No source"
        assert window.live.view.frame is None  # no stale image shown as if it were live
        plugged.set()
        qtbot.waitUntil(lambda: "source" not in window.banners.banners, timeout=10_000)
        qtbot.waitUntil(lambda: window.live.view.frame is not None, timeout=10_000)
        assert window.status.source.plain == "Source live"
    finally:
        window.shutdown()


def test_rejected_model_shows_a_banner_and_live_view_keeps_running(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundle_dir, tampered)
    model = tampered / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    plugged = threading.Event()
    plugged.set()
    window = open_window(qtbot, make_config(tmp_path, tampered), opener=lambda spec: CaptureCard(plugged))
    try:
        qtbot.waitUntil(lambda: "model" in window.banners.banners, timeout=30_000)
        text = window.banners.banners["model"].text.text()
        assert "Model missing or rejected" in text and "Ask support" in text
        assert "sha256" in window.settings.model.text()  # the full reason, for support
        assert window.status.model.plain == "No model"
        assert not window.live.analyse.isEnabled()
        assert not window.live.live_toggle.isEnabled()
        assert window.live.card.headline.text() == "Analysis unavailable"
        shown = window.live.view.frame.index if window.live.view.frame else 0
        qtbot.waitUntil(lambda: window.live.view.frame is not None and window.live.view.frame.index > shown + 5, timeout=10_000)
        window.go("Settings")  # the PIN overlay, not the settings: the PIN guards them
        assert window.stack.currentWidget() is not window.settings and window.pin_entry.isVisible()
    finally:
        window.shutdown()


def test_low_disk_is_a_warning_and_results_are_still_saved(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    """Defect 5: below ``disk_low_mb`` the banner said "Storage full — new results cannot be saved" while saves
    still worked. Low is a warning with the space left; a result analysed meanwhile is stored."""
    plugged = threading.Event()
    plugged.set()
    config = make_config(tmp_path, tiny_bundle_dir, disk_low_mb=10**9)  # more than any disk: always "low"
    window = open_window(qtbot, config, opener=lambda spec: CaptureCard(plugged))
    try:
        qtbot.waitUntil(lambda: "disk" in window.banners.banners, timeout=10_000)
        banner = window.banners.banners["disk"]
        assert "Storage full" not in banner.text.text() and "cannot be saved" not in banner.text.text()
        assert "Storage low" in banner.text.text() and "MB left" in banner.text.text()
        assert "still being saved" in banner.text.text() and banner.fault.severity == "warning"
        qtbot.waitUntil(lambda: window.services.analysis.ready and window.live.view.frame is not None, timeout=30_000)
        start_exam(qtbot, window, "77", "L")
        outcome = analyse(qtbot, window)
        assert outcome.record is not None and outcome.record.seq is not None  # saved, as the banner says
    finally:
        window.shutdown()


def fill_disk(window, full: bool) -> None:
    """Hold the writer's SQLite file at its present size (``full``) or lift that: SQLite then fails writes with
    SQLITE_FULL, "database or disk is full", exactly as on a full disk (no root, no loop device needed)."""
    store = window.services.analysis._analyzer.store

    def limit() -> None:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0] if full else 1073741823
        store._db.execute(f"PRAGMA max_page_count = {pages}")

    window.services.analysis._writer.submit(limit).result()


def test_a_full_disk_says_so_keeps_the_frame_and_shows_analyse_again(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    """Defect 5: on a really full disk the card said "Not analysed" plus the database's file path, and the banner
    that says "Analyse again" was hidden behind the disk banner on the 7" screen. Now the card says the result was
    not saved because the storage is full (no path), the frame stays frozen for a retry, and the visible banner is
    the one that says what to do; once there is space again, Analyse stores it and the banner goes."""
    plugged = threading.Event()
    plugged.set()
    config = make_config(tmp_path, tiny_bundle_dir, disk_low_mb=10**9)  # a full disk is also below the low mark
    window = open_window(qtbot, config, opener=lambda spec: CaptureCard(plugged))
    try:
        qtbot.waitUntil(lambda: window.services.analysis.ready and window.live.view.frame is not None, timeout=30_000)
        qtbot.waitUntil(lambda: "disk" in window.banners.banners, timeout=10_000)
        start_exam(qtbot, window, "77", "L")
        fill_disk(window, True)
        tap(qtbot, window.live.analyse)
        qtbot.waitUntil(lambda: "store" in window.banners.banners, timeout=30_000)
        card = window.live.card
        assert card.headline.text() == "Not saved", card.headline.text()
        assert "storage is full" in card.detail.text() and "Analyse again" in card.detail.text()
        assert str(tmp_path) not in card.detail.text(), "the card shows a file path"
        visible = window.banners.visible_faults()
        assert [f.key for f in visible] == ["store"], "the banner that says what to do is hidden"
        text = window.banners.banners["store"].text.text()
        assert "Storage full" in text and "Analyse again" in text and "database or disk is full" in text
        assert str(tmp_path) not in text
        assert window.live.view.frozen and window.live.analyse.isEnabled()  # the frame is kept for the retry
        assert window.store.history() == []

        fill_disk(window, False)  # support freed space
        outcome = analyse(qtbot, window)
        assert outcome.record.seq is not None
        qtbot.waitUntil(lambda: "store" not in window.banners.banners, timeout=10_000)  # the window hears of it next

        fill_disk(window, True)  # full again; this time the clinician goes back to the moving image instead
        tap(qtbot, window.live.freeze)  # "Live"
        tap(qtbot, window.live.analyse)
        qtbot.waitUntil(lambda: "store" in window.banners.banners, timeout=30_000)
        tap(qtbot, window.live.freeze)
        assert "store" not in window.banners.banners, "'Analyse again' is offered for a frame that is gone"
    finally:
        window.shutdown()


def test_unreachable_hub_banner(qtbot, tmp_path: Path) -> None:
    broker = f"127.0.0.1:{free_port()}"  # nothing listens there
    plugged = threading.Event()
    plugged.set()
    config = make_config(tmp_path, tmp_path / "no-model", uplink={"enabled": True, "broker": broker})
    window = open_window(qtbot, config, opener=lambda spec: CaptureCard(plugged))
    try:
        qtbot.waitUntil(lambda: "hub" in window.banners.banners, timeout=10_000)
        assert "Hospital hub not reachable" in window.banners.banners["hub"].text.text()
        assert window.status.hub.plain == "Hub offline"
        # The Settings test does a real MQTT connect attempt and reports the failure.
        window.settings.hub.test.click()
        qtbot.waitUntil(lambda: "Failed" in window.settings.hub.result.text(), timeout=15_000)
        assert broker in window.settings.hub.result.text()
    finally:
        window.shutdown()


def test_reachable_hub_clears_and_connect_test_succeeds(qtbot, tmp_path: Path) -> None:
    from tests.mqtt_broker import MosquittoBroker

    with MosquittoBroker(tmp_path / "broker") as broker:
        plugged = threading.Event()
        plugged.set()
        config = make_config(tmp_path, tmp_path / "no-model", uplink={"enabled": True, "broker": broker.address})
        window = open_window(qtbot, config, opener=lambda spec: CaptureCard(plugged))
        try:
            qtbot.waitUntil(lambda: window.status.hub.plain == "Hub ok", timeout=10_000)
            assert "hub" not in window.banners.banners
            window.settings.hub.test.click()
            qtbot.waitUntil(lambda: "Connected" in window.settings.hub.result.text(), timeout=15_000)
        finally:
            window.shutdown()


def test_uplink_state_drives_the_hub_status(qtbot, tmp_path: Path) -> None:
    """Once the uplink process shares its state through the store, the status bar shows that state
    (here with no broker listening at all: the TCP probe is no longer what decides)."""
    from device.link.uplink.state import write_state
    from device.store import ResultStore

    broker = f"127.0.0.1:{free_port()}"
    plugged = threading.Event()
    plugged.set()
    config = make_config(tmp_path, tmp_path / "no-model", uplink={"enabled": True, "broker": broker})
    with ResultStore(config.store_path) as store:
        write_state(store, "connected", broker)
    window = open_window(qtbot, config, opener=lambda spec: CaptureCard(plugged))
    try:
        qtbot.waitUntil(lambda: window.status.hub.plain == "Hub ok", timeout=10_000)
        with ResultStore(config.store_path) as store:
            write_state(store, "disconnected", broker, "cannot connect: Connection refused")
        window.probe_hub()
        qtbot.waitUntil(lambda: window.status.hub.plain == "Hub offline", timeout=10_000)
        assert "Connection refused" in window.banners.banners["hub"].text.text()
        with ResultStore(config.store_path) as store:
            write_state(store, "stopped", broker)
        window.probe_hub()
        qtbot.waitUntil(lambda: "not running" in window.banners.banners["hub"].text.text(), timeout=10_000)
    finally:
        window.shutdown()


def test_hub_test_button_names_a_missing_tls_file(tmp_path: Path) -> None:
    """The Settings "Test hub" check builds its client like the uplink does: a missing CA file is a
    clear answer naming the file, not an exception."""
    from device.config import UplinkSection
    from ui.hub import mqtt_connect_test

    missing = tmp_path / "ca.pem"
    ok, message = mqtt_connect_test(UplinkSection(broker=f"127.0.0.1:{free_port()}", tls=True, ca_file=missing))
    assert not ok and "ca_file" in message and str(missing) in message and "not found" in message


@pytest.mark.parametrize("frozen", [False, True], ids=["live", "frozen"])
def test_a_pulled_usb_stick_clears_the_image_and_stops_analyse_until_it_is_back(qtbot, tmp_path: Path, tiny_bundle_dir: Path, frozen: bool) -> None:
    """Defect 5: with the USB stick pulled, only "Source error" showed in the status bar, the stale image stayed and
    Analyse still worked on it. Now the next status check (the periodic poll) sees the folder gone: a banner says
    so and what to do, the image — frozen or not — is cleared, Analyse is off; with the stick back, the images
    return by themselves and Analyse works again."""
    from tests.ui.test_ui_workflow import write_frames

    stick = tmp_path / "media" / "usb"
    write_frames(stick / "exam")
    config = parse_config(
        {
            "device": {"data_dir": str(tmp_path / "data")},
            "model": {"path": str(tiny_bundle_dir), "threads": 1},
            "source": {"spec": f"folder:{stick / 'exam'}", "reopen_interval_s": 0.1},
            "uplink": {"enabled": False},
        }
    )
    window = open_window(qtbot, config)
    try:
        live = window.live
        qtbot.waitUntil(lambda: window.services.analysis.ready and live.view.frame is not None, timeout=30_000)
        start_exam(qtbot, window, "77", "L")
        if frozen:
            tap(qtbot, live.freeze)
        assert live.analyse.isEnabled()
        (stick / "exam").rename(stick / "pulled")  # the stick is gone from its mount point
        window.poll()
        qtbot.waitUntil(lambda: "source" in window.banners.banners, timeout=10_000)
        text = window.banners.banners["source"].text.text()
        assert "USB stick" in text and "put it back" in text.lower(), text
        assert window.banners.visible_faults()[0].key == "source"
        qtbot.wait(300)  # the reader keeps running meanwhile: nothing stale may come back
        assert live.view.frame is None and not live.view.frozen, "the stale image is still on screen"
        assert not live.analyse.isEnabled(), "Analyse still works on the stale image"
        live.request_analysis()  # the screen's own entry point stores nothing either
        assert window.store.history() == []

        (stick / "pulled").rename(stick / "exam")  # back
        qtbot.waitUntil(lambda: live.view.frame is not None and "source" not in window.banners.banners, timeout=10_000)
        qtbot.waitUntil(live.analyse.isEnabled, timeout=5_000)
        outcome = analyse(qtbot, window)
        assert outcome.record.patient_ref == "77"
    finally:
        window.shutdown()
