"""Deploying builds to boards: the bundle a user copies, and running it over TVM RPC."""

from apprentice_hw.deploy.bundle import BUNDLE_DIR, Bundle, read_bundle, write_bundle

__all__ = ["BUNDLE_DIR", "Bundle", "read_bundle", "write_bundle"]
