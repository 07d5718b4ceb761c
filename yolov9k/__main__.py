"""``python -m yolov9k`` = the ``yolov9k`` command."""

from yolov9k.cli import main

raise SystemExit(main())
