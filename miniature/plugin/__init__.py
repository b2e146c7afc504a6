"""The pytest face: options, hooks, fixtures, the shipped checks and the pytest-html columns."""
