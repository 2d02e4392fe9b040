"""From video files to model inputs: the four patterns and the labels contract, decoding, the clip
cache, windows, patient-level splits and folds, torch datasets and augmentation, the frozen-encoder
feature cache, and the registered data sources (synthetic, POCUS, your folder).

Nothing is imported here: ``python -m lusv.data.sources`` must run on the standard library alone.
"""
