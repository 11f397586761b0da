"""Native scans into BraTS space: reading NIfTI and DICOM as they came off the scanner
(:mod:`~bratseg.native.reader`, :mod:`~bratseg.native.dicom`, :mod:`~bratseg.native.inputs`),
co-registration, skull stripping and registration to the SRI24 atlas onto the BraTS grid
(:mod:`~bratseg.native.to_brats`), and the way back onto the patient's grid
(:mod:`~bratseg.native.to_patient`).

This is a preprocessing stage: it knows nothing of the model. The inference stage calls it
(its ``native_path.segment_native``, and :func:`bratseg.segment`, which picks the path per
case); nothing here imports the inference stage.
"""

from bratseg.native.reader import Scan, read_scan

__all__ = ["Scan", "read_scan"]
