//! pagegen-macros: filled in by the executor issue.
