"""Native scans in, a label map on the patient's grid out: reading NIfTI and DICOM as they came
off the scanner, co-registration, skull stripping, registration to the SRI24 atlas onto the
BraTS grid, and the way back (:func:`segment_native`).

This is its own stage beside ``bratseg.preprocessing`` rather than inside it: it wraps the
whole inference path (reading, then :class:`~bratseg.inference.predictor.Segmenter`, then
resampling the result back), while ``bratseg.preprocessing`` sits below inference and must not
depend on it.
"""

from bratseg.native.pipeline import NativePrediction, segment_native
from bratseg.native.reader import Scan, read_scan

__all__ = ["NativePrediction", "Scan", "read_scan", "segment_native"]
