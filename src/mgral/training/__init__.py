"""Training: supervised (and, later, semi-supervised) trainers of detectors."""
