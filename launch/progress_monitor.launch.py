"""Launch the TCC progress monitor (Humble / Jazzy / Kilted).

    ros2 launch tcc_ros progress_monitor.launch.py bundle:=/path/to/bundle
    ros2 launch tcc_ros progress_monitor.launch.py bundle:=/path/to/bundle use_demo_camera:=true
    ros2 launch tcc_ros progress_monitor.launch.py bundle:=... namespace:=robot1   # /robot1/...

Starts the processes planned by :func:`tcc_ros.launch_wiring.plan`, exactly what
``python -m tcc_ros.monitor`` starts without ``ros2``: the monitor node with ``params_file``, the
console view, and optionally a demo camera replaying a dataset with ground truth. A launch
argument overrides a key of ``params_file`` only when it is given. When the monitor exits the
launch ends; when it exits with an error the launch fails (non-zero status). ``ros2 launch
tcc_ros progress_monitor.launch.py --show-args`` lists the arguments.
"""

from launch.actions import (
    DeclareLaunchArgument,
    OpaqueFunction,
    RegisterEventHandler,
    Shutdown,
    TimerAction,
)
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from tcc_ros.launch_wiring import LAUNCH_ARGUMENTS, exit_problem, plan

#: Seconds the console keeps listening after the demo camera's last frame.
DRAIN_S = 5.0
#: Seconds a process may take to end after SIGINT (and after SIGTERM) before the next signal.
CLEAN_EXIT_S = "20"


def _on_exit(role: str):
    def handler(event, _context):
        problem = exit_problem(role, event.returncode)
        if problem:  # an exception in a handler makes `ros2 launch` shut down and exit 1
            raise RuntimeError(problem)
        if role == "camera":
            return [TimerAction(period=DRAIN_S, actions=[Shutdown(reason="demo stream ended")])]
        return [Shutdown(reason=f"{role} exited")]

    return handler


def _processes(context):
    given = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    actions = []
    for spec in plan(given):
        node = Node(
            package="tcc_ros",
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace,
            arguments=spec.arguments,
            parameters=spec.parameters,
            output="screen",
            # the console writes its report on SIGINT: give it time on a loaded machine
            sigterm_timeout=CLEAN_EXIT_S,
            sigkill_timeout=CLEAN_EXIT_S,
        )
        actions.append(node)
        if spec.role in ("monitor", "camera"):
            handler = OnProcessExit(target_action=node, on_exit=_on_exit(spec.role))
            actions.append(RegisterEventHandler(handler))
    return actions


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
        for a in LAUNCH_ARGUMENTS
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_processes)])
