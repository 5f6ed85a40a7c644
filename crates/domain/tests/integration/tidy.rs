//! Workspace tidiness, checked inside `cargo test` (rust-analyzer's approach):
//! every non-test Rust module in the workspace starts with a `//!` doc saying
//! what it is for.

use std::path::Path;

#[test]
fn every_module_has_a_module_doc() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = test_support::workspace_sources(&crates);
    assert!(
        files.len() > 5,
        "found only {} files under {}",
        files.len(),
        crates.display()
    );
    let missing: Vec<_> = files
        .iter()
        // Unit-test siblings (`foo/tests.rs`) are test code, not modules to document.
        .filter(|path| path.file_name().is_none_or(|name| name != "tests.rs"))
        .filter(|path| {
            !std::fs::read_to_string(path)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` doc: {missing:#?}"
    );
}
