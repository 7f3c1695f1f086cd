"""diffkit plugin: the DDPM scheduler."""
