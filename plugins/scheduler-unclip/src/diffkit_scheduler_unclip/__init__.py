"""diffkit plugin: the unCLIP DDPM scheduler."""
