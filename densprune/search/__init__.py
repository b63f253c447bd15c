"""Find images in a workspace: by a text (the workspace's own CLIP text tower), by an image ("more like
this"), by caption words, or by a region of the 2-D map; every answer is a set of rows that can become
a tag (densprune.prune.curation)."""
