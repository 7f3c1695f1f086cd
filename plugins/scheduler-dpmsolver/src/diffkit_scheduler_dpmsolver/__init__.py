"""diffkit plugin: the DPM-Solver schedulers (multistep, single-step, inverse, SDE, EDM)."""
