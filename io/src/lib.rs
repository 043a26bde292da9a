//! pagegen-io: filled in by its issue.
