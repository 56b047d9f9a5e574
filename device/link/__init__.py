"""The link seam: everything that crosses between a device and the hospital hub.

``contract`` (the MQTT messages and topics, validated by the JSON Schemas in ``schemas/``), ``corrections``
(the correction vocabulary and rules both ends apply), ``mqtt`` (the one client factory: broker address, TLS,
credentials) and ``uplink`` (the device's store-and-forward process). The hub imports from ``device`` only this
package and the shared ``config``, ``errors`` and ``clock`` (tests/test_import_rules.py). paho-mqtt is imported
nowhere else in ``device``.
"""
