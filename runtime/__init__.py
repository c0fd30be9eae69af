"""edgeattn.runtime."""
