"""``resotoctl``: operate the core from a shell and hook any script onto any action.

The package reads as the command line: ``cli`` (global options, command groups), ``subscribe`` with
``child`` and ``limits`` (run a script per action), ``workflows`` with ``watch`` and ``runview``,
``bus`` (subscribers, events), ``graph``; ``render`` and ``output`` hold the human and JSON output.
It imports ``resotolib`` only, never ``resotocore``.
"""
