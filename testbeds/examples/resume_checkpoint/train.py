"""Resume-from-checkpoint example: a training loop that survives preemption.

The platform gives every job ``AITB_CHECKPOINT_DIR``, a folder that stays the same across
preemptions and retries of that job, and the same MLflow run (``MLFLOW_RUN_ID``) on every
attempt. This loop saves its step and state there every ``--every`` steps (atomically:
write a temporary file, then rename), and on start resumes from the last checkpoint, logging
into the same run with the step numbers continuing. Nothing is downloaded; only the standard
library (and mlflow when ``MLFLOW_TRACKING_URI`` is set).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)  # a preemption mid-write leaves the previous checkpoint intact


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=5, help="checkpoint every N steps")
    parser.add_argument("--step-s", type=float, default=0.5, help="seconds per step")
    args = parser.parse_args()

    folder = Path(os.environ.get("AITB_CHECKPOINT_DIR") or "checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "state.json"
    state = load(ckpt) or {"step": 0, "w": 0.0, "attempts": 0}
    state["attempts"] += 1
    resumed_from = state["step"]
    print(f"attempt {state['attempts']} (AITB_ATTEMPT={os.environ.get('AITB_ATTEMPT', '?')}): "
          f"{'resuming at step ' + str(resumed_from) if resumed_from else 'starting fresh'}",
          flush=True)

    tracking = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    if tracking:
        import mlflow

        run = mlflow.start_run()  # MLFLOW_RUN_ID: the job's one run, on every attempt
        mlflow.log_metric("resumed_from_step", resumed_from, step=state["attempts"])
    rng = random.Random(state["step"])
    while state["step"] < args.steps:
        time.sleep(args.step_s)
        state["step"] += 1
        state["w"] += 0.1 * (1.0 - state["w"]) + rng.uniform(-0.01, 0.01)  # "training"
        loss = math.exp(-3 * state["w"])
        if tracking:
            mlflow.log_metric("loss", loss, step=state["step"])
        if state["step"] % args.every == 0 or state["step"] == args.steps:
            save(ckpt, state)
            print(f"step {state['step']}: loss={loss:.4f} (checkpointed)", flush=True)
    if tracking:
        mlflow.log_metric("attempts", state["attempts"])
        mlflow.end_run()
        print(f"done in run {run.info.run_id}", flush=True)
    print(f"done: {state['step']} steps over {state['attempts']} attempt(s)", flush=True)


if __name__ == "__main__":
    main()
