"""A trained model outside its study: ``lusv export`` (``export``, ``model_card``), loading an export or a
``best.pt`` (``exported``), and ``lusv predict`` over files, folders and labels CSVs (``inputs``, ``video``,
``batch``, ``output``, ``command``); ``use`` is what notebook 09 calls. docs/use-a-model.md."""
