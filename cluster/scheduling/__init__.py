"""The queue, the Runner and its job types: the store, schedules, script runs, file transfers, publishing."""
