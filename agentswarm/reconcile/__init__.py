"""The reconcile stage: build and test `main`, turn failures into fix tasks."""
