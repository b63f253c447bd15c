"""densprune: Density-Based Pruning (DBP) of web-scale image-text datasets.

Embed every image, cluster the embeddings into concepts, measure each concept's complexity and
keep more of the complex concepts; see docs/method.md.
"""

__version__ = "0.1.0"
