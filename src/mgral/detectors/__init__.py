"""Detectors: torchvision models behind one interface (train, predict, embed)."""
