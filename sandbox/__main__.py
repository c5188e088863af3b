"""`python -m sandbox --host 127.0.0.1 --port 8900 [--inventory N]`: serve the provider sandbox."""

from __future__ import annotations

import argparse

from sandbox.app import DEFAULT_INVENTORY, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument(
        "--inventory",
        type=int,
        default=DEFAULT_INVENTORY,
        help="phone numbers for sale per country (default %(default)s)",
    )
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.inventory)


if __name__ == "__main__":
    main()
