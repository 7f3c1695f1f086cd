"""diffkit plugin: the DDIM scheduler."""
