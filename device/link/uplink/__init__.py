"""The device uplink: store-and-forward of results to the hospital hub over MQTT (contract: device/link/contract.py).

Runs as its own process (``python -m device uplink``): :func:`device.link.uplink.service.run`.
"""
