"""The model seam on the device side: everything a model bundle is and how it is run.

``bundle`` (the manifest, read and validated; ``write_bundle``, the only writer), ``signing`` (Ed25519
signatures), ``store`` (installing a signed bundle on a device and switching to it), ``preprocess`` and
``resample`` (the platform-exact pixels), ``operating_point`` (thresholds from validation scores) and
``runtime`` (running a bundle's TFLite model: one interpreter runner, one scores -> probabilities rule).

The workstation (``model_build``) builds, writes and scores bundles through this package too, so the device
and the build turn the same pixels into the same probabilities by construction (tests/device/model/test_runtime_parity.py).
"""
