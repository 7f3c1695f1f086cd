"""diffkit plugin: the LCM and TCD consistency schedulers."""
