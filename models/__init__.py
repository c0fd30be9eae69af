"""edgeattn.models."""
