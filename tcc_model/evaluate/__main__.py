"""``python -m tcc_model.evaluate``: see :mod:`tcc_model.evaluate.command`."""

from tcc_model.cli import entry_point
from tcc_model.evaluate.command import main

if __name__ == "__main__":
    entry_point(main)
