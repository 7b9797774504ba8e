"""bnnhw: binarized neural networks from PyTorch to open-toolchain FPGAs, bit-exact."""

__version__ = "0.1.0"
