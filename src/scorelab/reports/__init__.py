"""Reports on trained runs: sample metrics against the run's data with their floors
(`evaluate_metrics`, `scorelab eval --metrics`) and the side-by-side report of several runs
(`compare_runs`, `scorelab compare`). Application layer: they load runs and data."""
