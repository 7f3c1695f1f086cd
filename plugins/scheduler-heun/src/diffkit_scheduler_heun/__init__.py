"""diffkit plugin: the Heun scheduler."""
