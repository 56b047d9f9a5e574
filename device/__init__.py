"""sonopi appliance core: frame sources, preprocessing, TFLite inference and the durable result store.

No Qt and no network here: the UI (``ui/``) and the uplink build on top of this package.
"""

__version__ = "0.1.0"
