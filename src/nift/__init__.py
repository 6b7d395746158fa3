"""nift: non-instructional fine-tuning — teach a pre-trained LM to follow instructions without instruction data."""

__version__ = "0.1.0"
