"""Input pipelines: datasets on disk or generated, sampling, augmentation, batching per host."""
