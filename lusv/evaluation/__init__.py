"""A study's predictions judged: out-of-fold stacking and the fold ensemble, window- and
video-level AUCs, the linear probe reference row, and external validation on another dataset."""
