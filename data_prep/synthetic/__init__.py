"""Synthetic FFDM-like and DDSM-like screening cohorts (see :mod:`data_prep.synthetic.cohort`)."""

#: Version of the generator's output, recorded in every cohort.json; caches keyed on it are rebuilt
#: when it changes. 2: film borders touching the breast, labels across the skin line, breast_box.csv.
#: 3: the DDSM-like films' scanned-film artefacts (ramp edge bands, frame lines, streaks, markers at
#: the skin), findings.csv in the findings table format (``shape`` and ``points`` columns).
GENERATOR_VERSION = 3
