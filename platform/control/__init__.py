"""Control loops of the running platform: scheduling, dispatch/reconcile, tracking delivery."""
