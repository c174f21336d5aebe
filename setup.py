"""Pure-Python install of tcc_model and tcc_ros (pip / editable development installs).

colcon builds use CMakeLists.txt (ament_cmake: messages + Python sources + launch files);
this file serves `pip install -e .` in the development environment made by `make env`.
"""

from setuptools import find_packages, setup

setup(
    name="tcc_ros",
    version="0.1.0",
    description="Temporal Cycle-Consistency learning and live task-progress monitoring for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tcc_model", "tcc_model.*", "tcc_ros", "tcc_ros.*"]),
    package_data={"tcc_model": ["py.typed"]},
    entry_points={
        "console_scripts": [
            "tcc-train=tcc_model.train:main",
            "tcc-evaluate=tcc_model.evaluate:cli",
            "tcc-export=tcc_model.export.cli:main",
            "tcc-monitor=tcc_ros.monitor:cli",
        ]
    },
)
