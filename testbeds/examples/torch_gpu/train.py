"""PyTorch example: a small MLP on generated data, on CUDA when present, else CPU.

Needs `torch` in the job's Python. Logs the device, per-epoch loss and the
throughput to MLflow through the env the platform provides.
"""

from __future__ import annotations

import argparse
import time

import mlflow
import torch
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=1024)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 64, generator=generator)
    y = (x[:, :8].sum(dim=1) > 0).long()
    x, y = x.to(device), y.to(device)
    model = nn.Sequential(
        nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden), nn.ReLU(),
        nn.Linear(args.hidden, 2),
    ).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    with mlflow.start_run():
        mlflow.log_params(vars(args) | {"device": name})
        print(f"training on {name}", flush=True)
        for epoch in range(args.epochs):
            started = time.perf_counter()
            total = 0.0
            for i in range(0, args.samples, args.batch):
                optimiser.zero_grad()
                loss = loss_fn(model(x[i : i + args.batch]), y[i : i + args.batch])
                loss.backward()
                optimiser.step()
                total += loss.item()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            with torch.no_grad():
                accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
            batches = -(-args.samples // args.batch)
            mlflow.log_metrics(
                {"loss": total / batches, "accuracy": accuracy, "samples_per_s": args.samples / seconds},
                step=epoch,
            )
            print(f"epoch {epoch + 1}: loss={total / batches:.4f} acc={accuracy:.4f} "
                  f"{args.samples / seconds:,.0f} samples/s", flush=True)


if __name__ == "__main__":
    main()
