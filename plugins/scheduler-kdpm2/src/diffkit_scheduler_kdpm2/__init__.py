"""diffkit plugin: the DPM-2 schedulers (KDPM2 and its ancestral variant)."""
