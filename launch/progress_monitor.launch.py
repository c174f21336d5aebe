"""Launch the TCC progress monitor (Humble / Jazzy / Kilted).

    ros2 launch tcc_ros progress_monitor.launch.py bundle:=/path/to/bundle
    ros2 launch tcc_ros progress_monitor.launch.py bundle:=/path/to/bundle use_demo_camera:=true

Starts the same processes as ``python -m tcc_ros.monitor`` (which works without ``ros2``): the
monitor node with ``params_file``, the console view, and optionally a demo camera replaying a
dataset with ground truth. Launch arguments override the same keys of ``params_file``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(
        get_package_share_directory("tcc_ros"), "config", "progress_monitor.yaml"
    )
    bundle = LaunchConfiguration("bundle")
    image_topic = LaunchConfiguration("image_topic")
    namespace = LaunchConfiguration("output_namespace")
    compressed = LaunchConfiguration("compressed")
    arguments = [
        DeclareLaunchArgument("bundle", description="exported bundle directory"),
        DeclareLaunchArgument(
            "image_topic",
            default_value="/camera/image_raw",
            description="camera topic (sensor_msgs/Image)",
        ),
        DeclareLaunchArgument(
            "output_namespace",
            default_value="/tcc",
            description="prefix of the output topics (progress, phase, "
            "alignment, anomaly, reset, reload); the node itself keeps its name",
        ),
        DeclareLaunchArgument(
            "compressed",
            default_value="false",
            description="true: sensor_msgs/CompressedImage on image_topic",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params,
            description="parameter file of the progress_monitor node",
        ),
        DeclareLaunchArgument(
            "use_console", default_value="true", description="print events and a final report"
        ),
        DeclareLaunchArgument(
            "use_demo_camera", default_value="false", description="replay a dataset as the camera"
        ),
        DeclareLaunchArgument("demo_dataset", default_value="sim_pouring"),
        DeclareLaunchArgument("demo_split", default_value="test"),
        DeclareLaunchArgument("demo_rate", default_value="12.0"),
    ]
    monitor = Node(
        package="tcc_ros",
        executable="progress_monitor",
        name="progress_monitor",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "bundle": bundle,
                "image_topic": image_topic,
                "output_namespace": namespace,
                "compressed": compressed,
            },
        ],
    )
    console = Node(
        package="tcc_ros",
        executable="monitor_console",
        name="monitor_console",
        output="screen",
        arguments=["--namespace", namespace],
        condition=IfCondition(LaunchConfiguration("use_console")),
    )
    camera = Node(
        package="tcc_ros",
        executable="camera_source",
        name="camera_source",
        output="screen",
        arguments=[
            "--dataset",
            LaunchConfiguration("demo_dataset"),
            "--split",
            LaunchConfiguration("demo_split"),
            "--rate",
            LaunchConfiguration("demo_rate"),
            "--image-topic",
            image_topic,
            "--compressed",
            compressed,
            "--ground-truth-topic",
            [namespace, "/ground_truth"],
            "--reset-topic",
            [namespace, "/reset"],
        ],
        condition=IfCondition(LaunchConfiguration("use_demo_camera")),
    )
    return LaunchDescription([*arguments, monitor, console, camera])
