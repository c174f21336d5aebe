"""``python -m tcc_model.data.sim_pouring``: see :mod:`tcc_model.data.sim_pouring.cli`."""

from tcc_model.cli import entry_point
from tcc_model.data.sim_pouring.cli import main

if __name__ == "__main__":
    entry_point(main)
