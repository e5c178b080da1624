"""Synthetic FFDM-like and DDSM-like screening cohorts (see :mod:`data_prep.synthetic.cohort`)."""
