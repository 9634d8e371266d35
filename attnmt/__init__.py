"""attnmt: attention encoder-decoder machine translation (LSTM+attention and Transformer)."""

__version__ = "0.1.0"
