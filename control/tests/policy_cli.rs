//! `switchyard-control validate` as an operator runs it: exit codes and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn validate(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard-control"))
        .arg("validate")
        .arg(file)
        .output()
        .expect("run switchyard-control")
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[test]
fn a_good_policy_exits_zero_with_a_summary() {
    let output = validate(&manifest_dir().join("../configs/demo.yaml"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    assert_eq!(
        text(&output.stdout),
        "ok: 2 services, 4 pools, 9 backends, 2 regions\n"
    );
    assert_eq!(text(&output.stderr), "");

    let output = validate(&manifest_dir().join("../configs/minimal.yaml"));
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output.stdout),
        "ok: 1 service, 1 pool, 1 backend, 0 regions\n"
    );
}

#[test]
fn a_bad_policy_exits_one_listing_every_error() {
    // Run from the fixtures directory so the file label is short and stable.
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-control"))
        .current_dir(manifest_dir().join("tests/policies"))
        .args(["validate", "undefined_pool.yaml"])
        .output()
        .expect("run switchyard-control");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "");
    assert_eq!(
        text(&output.stderr),
        "undefined_pool.yaml:12:53: services[0].routes[0].fallback[0]: pool `llama-uss` is not defined (did you mean `llama-eu`?)
undefined_pool.yaml:13:17: services[0].routes[1].pool: pool `llama-west` is not defined (did you mean `llama-eu`?)
undefined_pool.yaml:14:21: services[0].canary.pool: pool `llama-v3` is not defined (did you mean `llama-eu`?)
undefined_pool.yaml: policy rejected, 3 errors
"
    );
}

#[test]
fn a_missing_file_exits_one() {
    let output = validate(Path::new("/nonexistent/switchyard/policy.yaml"));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("/nonexistent/switchyard/policy.yaml: cannot open: "),
        "{stderr}"
    );
    assert!(stderr.ends_with("policy rejected, 1 error\n"), "{stderr}");
}

#[test]
fn usage_errors_exit_two() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-control"))
        .arg("validate")
        .output()
        .expect("run switchyard-control");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("Usage:"));
}
