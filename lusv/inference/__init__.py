"""A trained model in use: rebuild a run's model and predict batches of clips with it.

``load_trained`` / ``build_run_model`` / ``model_config`` / ``model_with_state`` (``lusv.inference.trained``) and
``predict`` / ``predict_batches`` / ``forward_batch`` / ``masked_bce`` (``lusv.inference.batches``).
Training imports this package, never the other way round; applying a model to video files, with
its attention figure, is ``lusv.predict``.
"""

from lusv.inference.batches import forward_batch, masked_bce, predict, predict_batches
from lusv.inference.trained import build_run_model, load_trained, model_config, model_with_state

__all__ = ["build_run_model", "forward_batch", "load_trained", "masked_bce", "model_config", "model_with_state", "predict", "predict_batches"]
