"""The parts of grafana/render_dashboards.py."""
