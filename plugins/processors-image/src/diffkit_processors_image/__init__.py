"""diffkit plugin: image pre/post-processing shared by image pipelines."""
