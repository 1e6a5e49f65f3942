"""Development fixtures shared by the tests and the benchmarks: random checkpoints, sample catalogs,
hostile images, synthetic vector geometry. The service never imports this package."""
