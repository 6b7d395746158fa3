"""`nift train`: the train stage (`stage`), its data (`data`), the student model (`student`) and the training loop
with its loss (`trainer`)."""

from nift.train.stage import ACCELERATE_CONFIGS, META, accelerate_config, run

__all__ = ["ACCELERATE_CONFIGS", "META", "accelerate_config", "run"]
