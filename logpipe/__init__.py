"""logpipe: ships a Dify stack's Docker logs to Grafana Loki and derives Prometheus metrics from them."""

__version__ = "0.1.0"
