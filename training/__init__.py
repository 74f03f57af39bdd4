"""Training and evaluation entry points: python -m training.fit, python -m training.evaluate."""
