"""mnist99: a config-driven experiment framework for image classification on MNIST."""

__version__ = "0.1.0"
