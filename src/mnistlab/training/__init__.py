"""Training: the typed run config and its recipes, augmentation, and the training loop."""
