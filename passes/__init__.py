"""edgeattn.passes."""
