"""The implementation benchmark: our pipelines against diffusers', sweep throughput, the served app's soak."""
