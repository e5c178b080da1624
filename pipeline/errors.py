"""The one error type a user sees: bad input, named with its option or file, the value and what was expected.

Everything a person can get wrong (an option, a file, a data set, a cluster address) is raised as a
:class:`UserError` (or a subclass); ``run.py`` is the one place that prints it, as a single line
``error: <message>``, and exits with status 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input from the person running the study: run.py prints ``error: <message>`` and exits with 2.

    The message names the option or file, the value given and what was expected.
    """
