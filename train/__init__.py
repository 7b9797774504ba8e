"""Training: PyTorch BNN layers, models, training loop and export (the only place that imports torch)."""
