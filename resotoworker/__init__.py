"""resotoworker: collects cloud resources into the core, marks expired ones, deletes marked ones."""
