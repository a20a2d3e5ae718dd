"""The console scripts: `mapreduce` and `manage_cluster`."""
