"""Monitoring for serving: Prometheus scrape jobs and alert rules, a Grafana dashboard (checked with promtool)."""
