"""diffkit plugin: the xformers attention backend (CUDA only, optional)."""
