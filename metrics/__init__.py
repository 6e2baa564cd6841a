"""contactpulse KPI math (pure functions) and the Prometheus exposition."""
