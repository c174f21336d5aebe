"""``python -m tcc_ros.monitor_node --ros-args --params-file config/progress_monitor.yaml``."""

from tcc_model.cli import entry_point
from tcc_ros.monitor_node.app import main

entry_point(main)
