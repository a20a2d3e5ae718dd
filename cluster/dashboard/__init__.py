"""The web dashboard: the cluster, the queue, runs and published results on one page each.

`mapreduce dashboard` serves it (see serve.py); `create_app` builds the Flask application
for a config, which is all the route tests need.
"""
from cluster.dashboard.app import create_app

__all__ = ["create_app"]
