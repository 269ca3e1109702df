"""The codecs: Coder and the built-in coders, compression, tuple keys, typed values."""
