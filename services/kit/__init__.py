"""Runtime kit shared by every service: serving, health, telemetry, settings, errors, clients, audio."""
