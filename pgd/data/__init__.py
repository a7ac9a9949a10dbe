"""Datasets for the PGD reproduction: SYNTHETIC generators and real-dataset converters.

* :mod:`pgd.data.synthetic` -- procedurally drawn (SYNTHETIC) shapes / crowd scenes.
* :mod:`pgd.data.make_data` -- ``python -m pgd make-data``: writes them as COCO json + images.
* :mod:`pgd.data.crowdhuman` -- ``python -m pgd convert-crowdhuman``: real CrowdHuman .odgt
  annotations to COCO json.

Importing this package is cheap on purpose; submodules are imported where they are used.
"""
