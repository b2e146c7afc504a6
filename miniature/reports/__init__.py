"""Reports of a gate run: the JSON payload, the terminal table and the summary page."""
