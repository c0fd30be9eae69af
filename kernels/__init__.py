"""edgeattn.kernels."""
