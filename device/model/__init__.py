"""The model seam on the device side: running a bundle's TFLite model (``runtime``).

The workstation (``model_build``) scores bundles through this package too, so the device and the build
turn the same pixels into the same probabilities by construction (tests/test_runtime_parity.py).
"""
