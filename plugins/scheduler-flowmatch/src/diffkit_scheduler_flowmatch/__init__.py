"""diffkit plugin: the flow-matching (rectified flow) Euler and Heun schedulers."""
