"""``python -m tcc_model.train``: see :mod:`tcc_model.train.cli`."""

from tcc_model.cli import entry_point
from tcc_model.train.cli import cli_main

if __name__ == "__main__":
    entry_point(cli_main)
