"""``python -m msp_example`` serves; ``python -m msp_example job`` runs the job once."""

import sys

from msp_runtime import runtime

from . import ExampleJob, ExampleService


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["job"]:
        runtime.execute_job(ExampleJob(), args[1:])
    runtime.start(ExampleService(), args)


if __name__ == "__main__":
    main()
