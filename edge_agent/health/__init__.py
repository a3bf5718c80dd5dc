"""Health: systemd notify and watchdog, Prometheus metrics, the container health check."""
