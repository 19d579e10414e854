"""Bridges to annotation tools: Label Studio (push, pull, an ML backend). Optional extra: ``mgral[labelstudio]``."""
