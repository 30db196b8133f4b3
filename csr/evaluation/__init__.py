"""Evaluation arithmetic, pure like the rest of the core: CHAIR and POPE on the toy world's
exact truth (metrics), COCO CHAIR with the original's or cleaned text rules (coco,
chair_text), pair agreement between two settings (agreement), and spreads over seeds
(summary). Reading files is the job of the `evaluation` and `toyworld` packages."""
