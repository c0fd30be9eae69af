"""edgeattn.compiler."""
