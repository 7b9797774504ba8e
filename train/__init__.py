"""Training: PyTorch BNN layers, models, training loop and export.

The only part of bnnhw that imports torch (installed as ``bnnhw.train``).
"""
