"""Allow ``python -m demist_bids``."""

from demist_bids.cli.run import main

if __name__ == "__main__":  # pragma: no cover
    main()
