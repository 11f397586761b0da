"""RANO response assessment of label maps: the measurements of one scan
(:mod:`bratseg.measurement.rano`) and the category rules of a change between two
(:mod:`bratseg.measurement.response`). Pure analysis of label maps: segmenting and comparing
time points is :mod:`bratseg.followup`'s.

The figures follow the measurement contract of the project (``Measurement``, ``Lesion``,
``Diameter``, ``measure``, ``measure_file``; ``FollowupResult`` and ``run_followup`` are in
:mod:`bratseg.followup`). Beyond the contract's ``measurable`` rule (both diameters at least
10 mm) a lesion is measurable only when it is seen on at least two axial slices, and on slices
thicker than 5 mm only when both diameters are at least twice the slice thickness (RANO). Extra JSON keys: per lesion
``slices_spanned`` and both diameters' ends (``longest``, ``perpendicular``: ``start``, ``end``
in voxel coordinates, ``length_mm``); per measurement ``target_count``, ``measurable_disease``,
``axial_axis``, ``slice_thickness_mm``, ``notes``; ``followup.json`` adds ``reasons``,
``flagged``, ``confidence``, ``new_measurable_lesions``, ``difference_cm3``, ``registration``,
``notes``, ``files`` and ``seconds``, and each time point's ``source``, ``path`` and
``warnings``. ``Lesion.component`` is the lesion's number in
:func:`~bratseg.measurement.rano.enhancing_components` of the measured map.

>>> import numpy as np
>>> labels = np.zeros((30, 30, 6), np.uint8); labels[5:20, 5:17, 1:4] = 4
>>> measure(labels, np.eye(4)).to_json()["lesions"][0]["measurable"]
True
"""

from bratseg.measurement.rano import Diameter, Lesion, Measurement, measure, measure_file

__all__ = ["Diameter", "Lesion", "Measurement", "measure", "measure_file"]
