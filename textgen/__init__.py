"""textgen: train, evaluate and stream text from RNN, LSTM, GRU, Transformer and Hugging Face models."""

from transformers.utils import logging as _hf_logging

# Loading and saving small models prints a progress bar per call; our own progress reporting is enough.
_hf_logging.disable_progress_bar()
