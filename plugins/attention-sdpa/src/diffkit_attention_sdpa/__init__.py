"""diffkit plugin: the SDPA attention backend."""
