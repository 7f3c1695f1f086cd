"""diffkit plugin: the DEIS multistep scheduler."""
