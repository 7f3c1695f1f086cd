"""diffkit plugin: the consistency-model sampler."""
