#!/usr/bin/env python
"""manage.py of the example project; from the top of the repository:
python -m examples.django_project.manage <command>"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
