"""diffkit plugin: the DDIM scheduler and its inverse."""
