"""``python -m tcc_model.export``: see :mod:`tcc_model.export.cli`."""

from tcc_model.cli import entry_point
from tcc_model.export.cli import _run

if __name__ == "__main__":
    entry_point(_run)
