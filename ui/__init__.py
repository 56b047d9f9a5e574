"""sonopi touchscreen application (PyQt5): ``python -m ui [--config FILE] [--fullscreen] [--size 800x480]``.

One module per screen or widget; see docs/ui.md for the layout and the threading model.
"""
