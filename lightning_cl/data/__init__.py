"""Data: MNIST files, tensors, the in-memory batch loader and the Split-MNIST DataModule."""
