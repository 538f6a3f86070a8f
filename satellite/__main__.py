"""`python -m satellite`: the `satellite` command (see `satellite.cli`)."""

from satellite.cli import main

if __name__ == "__main__":
    main()
