"""The package's base layer: helpers every other layer may use (stdlib, numpy and Pillow only)."""
