"""diffkit plugin: the sliced attention backend."""
