//! pagegen-executor: filled in by its issue.
