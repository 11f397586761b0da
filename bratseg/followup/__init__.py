"""The longitudinal workflow: two time points of one patient segmented (or their label maps
given), registered and compared, as ``bratseg followup`` and the web front ends' follow-up mode
run it.

- :mod:`bratseg.followup.timepoint`: one time point, segmented as ``bratseg predict`` would or
  read with its given label map, with the T1ce and brain mask registration needs;
- :mod:`bratseg.followup.tracking`: which follow-up lesion is which baseline lesion;
- :mod:`bratseg.followup.compare`: :func:`run_followup`, the comparison and its files
  (``followup.json``, label maps, difference map; ``report.pdf`` through the writer its caller
  passes).

The measurements of one label map and the category rules are :mod:`bratseg.measurement`'s; the
PDF is :mod:`bratseg.reporting.followup_report`'s.
"""

from bratseg.followup.compare import FILES, FollowupResult, ReportMaps, run_followup

__all__ = ["FILES", "FollowupResult", "ReportMaps", "run_followup"]
