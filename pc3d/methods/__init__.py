"""One file per paper: what a training step computes, from batch to named losses, and its entry points."""
