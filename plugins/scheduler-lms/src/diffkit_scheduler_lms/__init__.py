"""diffkit plugin: the LMS (linear multistep) scheduler."""
