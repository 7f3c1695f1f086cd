"""diffkit plugin: the UniPC multistep scheduler."""
