"""textgen: train, evaluate and stream text from RNN, LSTM, GRU, Transformer and Hugging Face models.

Importing the package is cheap on purpose: torch and transformers load with the modules that need them,
so the page can be served before they are imported (see textgen/service/startup.py).
"""
