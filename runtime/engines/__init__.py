"""Our own inference code for each backend's networks."""
