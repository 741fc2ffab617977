"""The zarr v3 capture store: format (`schema`), crash-safe writer, validating reader, validator, summary.

    from sim_bridge.store import StoreWriter, open_store, validate_store
"""
from sim_bridge.store.reader import CaptureStore, Episode, FrameArray, open_store
from sim_bridge.store.schema import FORMAT_VERSION, StoreError
from sim_bridge.store.validate import ValidationReport, validate_report, validate_store
from sim_bridge.store.writer import EpisodeWriter, StoreWriter

__all__ = ["FORMAT_VERSION", "StoreError", "StoreWriter", "EpisodeWriter", "open_store", "CaptureStore", "Episode",
           "FrameArray", "validate_store", "validate_report", "ValidationReport"]
