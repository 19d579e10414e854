"""The active-learning loop and its run store."""
