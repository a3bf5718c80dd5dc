"""The model side of the runtime: bundles and their manifest, the signal front end, model outputs and
condition indicators."""
