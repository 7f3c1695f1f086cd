"""diffkit plugin: the variance-exploding score-SDE scheduler."""
