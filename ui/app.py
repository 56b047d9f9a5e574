"""Start-up: configuration, services, the main window, kiosk mode and the systemd watchdog."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtWidgets import QApplication

from device import watchdog
from device.allocator import map_large_blocks_apart
from device.config import DeviceConfig, load_config
from device.engine import Classifier
from device.errors import ConfigError
from ui.main_window import MainWindow, Services
from ui.workers import AnalysisService, FrameReader, SourceOpener, default_opener

log = logging.getLogger("ui")

SIZES = {"800x480": (800, 480), "1280x720": (1280, 720)}


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 800x480 (got {text!r})") from exc
    if width < 320 or height < 240:
        raise argparse.ArgumentTypeError("size must be at least 320x240")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ui", description="sonopi touchscreen application")
    parser.add_argument("--config", type=Path, help="device configuration TOML (default: built-in development defaults)")
    parser.add_argument("--fullscreen", action="store_true", help="kiosk mode: full screen, no decorations, no cursor")
    parser.add_argument("--size", type=parse_size, default=None, help="window size, e.g. 800x480 or 1280x720")
    parser.add_argument("--source", help="override the configured source spec (e.g. folder:/media/usb)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def build_window(
    config: DeviceConfig,
    size: tuple[int, int] = (800, 480),
    *,
    source_spec: str | None = None,
    classifier_factory: Callable[[], Classifier] | None = None,
    opener: SourceOpener | None = None,
    config_path: Path | None = None,
) -> MainWindow:
    """Create the services and the window (not shown, threads not started: call :func:`start`)."""
    reader = FrameReader(
        source_spec or config.source.spec,
        opener or default_opener(config),
        preview_fps=config.ui.preview_fps,
        hold_s=config.ui.still_hold_s,
        reopen_interval_s=config.source.reopen_interval_s,
    )
    analysis = AnalysisService(config, classifier_factory)
    window = MainWindow(config, Services(reader, analysis), size, config_path=config_path)
    # Settings › Model says which site bundle runs, or why the one chosen on the device does not (site_choice.py)
    analysis.model_ready.connect(lambda _manifest: window.settings.set_site_choice(analysis.site_choice))
    analysis.model_failed.connect(lambda _message: window.settings.set_site_choice(None))
    return window


def start(window: MainWindow) -> None:
    window.services.reader.start()
    window.services.analysis.start()
    window.start()


def enter_kiosk(window: MainWindow, app: QApplication) -> None:
    window.setWindowFlags(window.windowFlags() | Qt.WindowType.FramelessWindowHint)
    app.setOverrideCursor(Qt.CursorShape.BlankCursor)  # touch only: no pointer on screen
    window.showFullScreen()


def _watchdog_beat() -> None:
    watchdog.notify("WATCHDOG=1")


def main(argv: list[str] | None = None) -> int:
    map_large_blocks_apart()  # freed frames go back to the system (device/allocator.py)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    app = cast(QApplication, QApplication.instance() or QApplication(sys.argv[:1]))  # the one in this process is a QApplication
    app.setApplicationName("sonopi")
    fullscreen = args.fullscreen or config.ui.fullscreen
    screen = app.primaryScreen() if fullscreen else None
    if args.size is not None:
        size = args.size
    elif screen is not None:
        geometry = screen.geometry()
        size = (geometry.width(), geometry.height())
    else:
        size = SIZES["800x480"]
    window = build_window(config, size, source_spec=args.source, config_path=args.config)
    if fullscreen:
        enter_kiosk(window, app)
    else:
        window.setFixedSize(*size)
        window.show()
    start(window)
    watchdog.notify("READY=1")
    beat = QTimer()
    beat.timeout.connect(_watchdog_beat)
    beat.start(int(watchdog.interval_s() * 1000))
    # Ctrl-C / SIGTERM (systemd stop): close cleanly so the reader and writer threads finish.
    signal.signal(signal.SIGTERM, lambda *_: app.quit())
    signal.signal(signal.SIGINT, lambda *_: app.quit())
    tick = QTimer()
    tick.timeout.connect(lambda: None)  # lets Python run signal handlers while Qt's loop is idle
    tick.start(250)
    code = app.exec_()
    watchdog.notify("STOPPING=1")
    window.shutdown()
    return code
