"""``resotoctl``: operate the core from a shell and hook any script onto any action.

The modules read as the command line: ``cli`` (global options, command groups) with ``config`` (the
one place clients are made) and ``errors`` (the one error boundary); ``subscribe`` with ``runner``,
``child`` and ``limits`` (run a command per action); ``workflows`` with ``watch`` and ``runview``;
``bus`` (subscribers, events); ``graph``; ``render`` and ``output`` for tables and JSON.
It imports ``resotolib`` only, never ``resotocore``.
"""
