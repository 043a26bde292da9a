//! The attribute macros compile what they should and reject what they should, with errors at the
//! offending token (trybuild snapshots under `tests/ui/`; refresh with `TRYBUILD=overwrite`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/fail_*.rs");
}
