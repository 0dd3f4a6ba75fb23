"""PRN, the Panoptic Refinement Network: renderer (targets and base inputs), network, post-processing."""
