"""Training: one resumable engine (:mod:`.engine`) running objectives — supervised, semi-supervised (ISD,
SED), head-only on cached features, and the strategies' own (learning loss, MI-AOD)."""
