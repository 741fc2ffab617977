"""Generation: the model bundle, hierarchical sampling, `SceneGenerator` and `NeuralScene`."""
