"""contactpulse stream processing: the Faust app, its topics, agents and tables."""
