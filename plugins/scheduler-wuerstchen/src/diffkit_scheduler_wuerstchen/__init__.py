"""diffkit plugin: the Wuerstchen DDPM scheduler (continuous time)."""
