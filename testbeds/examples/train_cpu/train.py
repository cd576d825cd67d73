"""CPU training example: a linear classifier on generated data, tracked in MLflow.

The platform sets MLFLOW_TRACKING_URI and MLFLOW_RUN_ID, so `mlflow.start_run()`
logs into the job's run. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time

import mlflow
import mlflow.sklearn
import numpy as np
from mlflow.entities import Metric
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    x, y = make_classification(
        n_samples=args.samples, n_features=20, n_informative=8, random_state=args.seed
    )
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=args.seed)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    model = SGDClassifier(loss="log_loss", alpha=args.alpha, random_state=args.seed)
    classes = np.unique(y)

    with mlflow.start_run() as run:
        mlflow.log_params(vars(args) | {"model": "SGDClassifier", "features": 20})
        client = mlflow.MlflowClient()
        for epoch in range(args.epochs):
            model.partial_fit(x_train, y_train, classes=classes)
            acc = accuracy_score(y_test, model.predict(x_test))
            loss = log_loss(y_test, model.predict_proba(x_test))
            now = int(time.time() * 1000)
            # One request per epoch instead of one per metric.
            client.log_batch(
                run.info.run_id,
                metrics=[Metric("accuracy", acc, now, epoch), Metric("loss", loss, now, epoch)],
            )
            print(f"epoch {epoch + 1}/{args.epochs} accuracy={acc:.4f} loss={loss:.4f}", flush=True)
        mlflow.log_metric("final_accuracy", acc)
        # The logged model takes raw features: scaler and classifier in one pipeline.
        pipeline = make_pipeline(scaler, model)
        mlflow.sklearn.log_model(pipeline, name="model", input_example=scaler.inverse_transform(x_test[:2]))
        print(f"done: final accuracy {acc:.4f}, run {run.info.run_id}")


if __name__ == "__main__":
    main()
