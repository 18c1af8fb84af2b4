"""Ray Train loops for the encoder, the pruner and the AAM (work in progress: issue 5)."""
