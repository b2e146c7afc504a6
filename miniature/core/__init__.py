"""The gate core: characteristics, statistics, per-item outputs and their cache, models, data, tasks."""
