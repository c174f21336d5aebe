"""The threshold ceiling: what any thresholds could catch on the evaluated episodes."""

import numpy as np

from tcc_model.monitor_metrics import threshold_ceiling


def test_threshold_ceiling_counts_what_thresholds_on_the_episodes_themselves_could_catch():
    # two detectors; normal maxima (one outlier on detector 0), five anomalies
    normal = np.array([[1.0, 1.0], [1.2, 0.9], [5.0, 1.1]])
    anomalous = np.array(
        [
            [2.0, 0.5],  # above detector 0's normal max only without the outlier
            [6.0, 0.2],  # above even the outlier
            [0.5, 1.5],  # caught by detector 1
            [0.5, 0.5],  # below both: never caught
            [3.0, 1.0],  # detector 0 without the outlier
        ]
    )
    assert threshold_ceiling(normal, anomalous, 0) == 2
    assert threshold_ceiling(normal, anomalous, 1) == 4  # giving up the outlier frees two
    assert threshold_ceiling(normal, anomalous, 3) == 5  # no normal left: every anomaly
    assert threshold_ceiling(normal, np.zeros((0, 2)), 0) == 0
