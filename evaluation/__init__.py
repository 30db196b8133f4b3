"""Evaluation on real data: COCO CHAIR and POPE files, and greedy answers from any model."""
