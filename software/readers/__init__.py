"""Reader processes: the code they run, the pool that feeds them, where their samples land."""
