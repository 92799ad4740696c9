"""lightning-cl: catastrophic forgetting in small MLPs on Split-MNIST, with PyTorch Lightning."""

__version__ = "0.1.0"
