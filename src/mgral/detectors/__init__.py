"""Detectors: torchvision models behind one interface (the forward in pieces, predictions, embeddings).
They do not train themselves: :mod:`mgral.training` does."""
