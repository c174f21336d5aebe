"""Fixtures shared by test modules (the ROS graph lives in ros_helpers with the other helpers)."""

from ros_helpers import ros_graph  # noqa: F401  (a fixture)
