"""The operations side: status, metrics, systemd's notify and watchdog, the supervisor."""
