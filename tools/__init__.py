"""What runs off the device: dataset readers, evaluation, benchmarks, training, admin, central."""
