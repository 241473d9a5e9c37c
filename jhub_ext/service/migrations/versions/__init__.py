"""The revisions of the jobs database's schema, oldest first."""
