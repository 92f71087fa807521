"""An example MSP service and job built on msp-runtime, mirroring upstream ``cmd/msp-example``."""

from .job import ExampleJob
from .service import ExampleService

__all__ = ["ExampleJob", "ExampleService"]
