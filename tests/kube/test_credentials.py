"""Runner credentials reach KubeRay pods through the attempt's Secret, not a file path."""

from __future__ import annotations

from aitb.clusters.base import DispatchRequest, ReplicaResources
from aitb.clusters.kuberay.backend import credentials_in_env
from aitb.tracking.runner import CREDENTIALS_ENV


def test_the_credentials_file_becomes_secret_variables(tmp_path):
    path = tmp_path / "mlflow.env"
    path.write_text("MLFLOW_TRACKING_USERNAME='aitb-run/j-1'\nMLFLOW_TRACKING_PASSWORD='it'\\''s secret'\n")
    req = DispatchRequest(job_id="j-1", entrypoint="python x.py", head=ReplicaResources(cpu=1, memory_gib=1),
                          env={"MLFLOW_RUN_ID": "r", CREDENTIALS_ENV: str(path)})
    env = credentials_in_env(req).env
    assert env == {"MLFLOW_RUN_ID": "r", "MLFLOW_TRACKING_USERNAME": "aitb-run/j-1",
                   "MLFLOW_TRACKING_PASSWORD": "it's secret"}


def test_a_revoked_file_leaves_the_job_without_credentials(tmp_path):
    req = DispatchRequest(job_id="j-1", entrypoint="x", head=ReplicaResources(cpu=1, memory_gib=1),
                          env={CREDENTIALS_ENV: str(tmp_path / "gone"), "A": "b"})
    assert credentials_in_env(req).env == {"A": "b"}
