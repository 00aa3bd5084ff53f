"""Metrics: fid@R, pfid, scaleinv-fid@k and KID with the published Inception detectors (docs/metrics.md)."""
from .compute import (MetricSpec, Options, StatsCache, append_jsonl, fid_at_resolution, parse_metric_list,
                      patch_fid, pfid_source, scaleinv_fid, scaleinv_postprocess, scaleinv_sizes)
from .detectors import Detector, DetectorNotFound, from_module, load_detector
from .real_images import FullImages, ImageListing, RealPatches, list_images, source_fingerprint
from .stats import FeatureStats, frechet_distance, kernel_inception_distance, kid_subsets
