"""diffkit plugin: the stochastic Karras et al. sampler for variance-exploding models."""
