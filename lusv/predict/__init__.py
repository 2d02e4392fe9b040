"""A trained model applied to video files: ``lusv predict`` (``lusv.predict.video``)."""
