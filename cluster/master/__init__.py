"""Bringing a cluster up and down: the ClusterManager, code and project deployment, remote commands (SSH), S3."""
