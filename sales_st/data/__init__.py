"""Input data: the contract, sources mapped by config, validation with row accounting, the
synthetic generator."""
