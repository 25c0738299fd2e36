"""``python -m resotoctl``: the same as the ``resotoctl`` console script."""

from resotoctl.cli import main

if __name__ == "__main__":
    main()
