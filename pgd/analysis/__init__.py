"""Analyses on top of trained runs and their metrics files.

* :mod:`pgd.analysis.figures` -- K / alpha curves, Fig. 3 mask-out curves, Table 1 gain bars.
* :mod:`pgd.analysis.claims` -- checks each quantitative claim of the paper on the runs.
* :mod:`pgd.analysis.mask_out` -- Fig. 3 pilot: AP after masking the top-X% quality predictions.
* :mod:`pgd.analysis.quality_maps` -- Fig. 2: teacher prediction-quality heat-maps.

Each module is a ``python -m pgd <command>`` (``add_arguments`` / ``run``); heavy imports
(torch, mmdet, matplotlib) happen inside ``run`` only.
"""
