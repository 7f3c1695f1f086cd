"""diffkit plugin: the "model" offload strategy (whole components move while they run)."""
