"""Ready terms: numerically stable losses for VAEs, mixture densities and sequences."""
