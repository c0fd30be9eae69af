"""edgeattn.targets."""
