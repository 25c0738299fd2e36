"""resotocore: the workflow engine daemon."""
