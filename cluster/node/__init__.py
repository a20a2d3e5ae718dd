"""What runs on each location: the cluster server, its RPyC services, the Redis command protocol,
the location's redis-server, the cluster's certificates."""
