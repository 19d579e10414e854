"""Detection metrics: VOC AP in memory, COCO AP through faster-coco-eval / pycocotools."""
