#!/usr/bin/env python3
"""`satellite stats`, for cron lines and operators without the entry point on PATH. Reads the server's
settings (environment variables, or .env in the working directory); `--help` says the rest."""

from satellite.cli import script

if __name__ == "__main__":
    script("stats")
