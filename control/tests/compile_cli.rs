//! `switchyard-control compile` as an operator runs it.

#[path = "compile/helpers.rs"]
mod helpers;

use std::process::{Command, Output};

use helpers::*;
use switchyard_table::generation::Generation;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard-control"))
        .args(args)
        .output()
        .expect("run switchyard-control")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[test]
fn compile_writes_the_generation_and_a_summary() {
    let dir = scratch("cli-demo");
    let out = dir.join("demo.gen");
    let demo = manifest_dir().join("../configs/demo.yaml");
    let output = run(&[
        "compile",
        demo.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--generation",
        "42",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr), "");

    let blob = std::fs::read(&out).unwrap();
    let g = Generation::decode(&blob).unwrap();
    assert_eq!(g.generation, 42);
    // What the library compiles, byte for byte.
    let mut expected = compiled(&helpers::demo());
    expected.generation = 42;
    assert_eq!(blob, expected.encode());

    let checksum = Generation::peek_header(&blob).unwrap().checksum;
    assert_eq!(
        text(&output.stdout),
        format!(
            "{}: generation 42, {} bytes, 2 services, 4 pools, 9 backends, 2 regions, checksum {checksum:#018x}\n",
            out.display(),
            blob.len()
        )
    );
    assert!(!dir.join("demo.gen.tmp").exists());
}

#[test]
fn compile_resolves_the_geoip_database_beside_the_policy() {
    let dir = scratch("cli-geoip");
    let out = dir.join("geo.gen");
    let policy = manifest_dir().join("tests/compile/geoip.yaml");
    let output = run(&[
        "compile",
        policy.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let g = Generation::decode(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(g.generation, 1);
    assert_eq!(region_of(&g, "10.10.5.9").as_deref(), Some("eu-west"));
}

#[test]
fn an_invalid_policy_is_rejected_with_every_error() {
    let dir = scratch("cli-invalid");
    let out = dir.join("never.gen");
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-control"))
        .current_dir(manifest_dir().join("tests/policies"))
        .args([
            "compile",
            "undefined_pool.yaml",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "");
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
    assert!(
        stderr.ends_with("undefined_pool.yaml: policy rejected, 3 errors\n"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn a_missing_geoip_database_is_named() {
    let dir = scratch("cli-nogeo");
    let text_in = std::fs::read_to_string(manifest_dir().join("tests/compile/geoip.yaml"))
        .unwrap()
        .replace("../geoip/countries.mmdb", "missing.mmdb");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, text_in).unwrap();
    let out = dir.join("never.gen");
    let output = run(&[
        "compile",
        policy.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}: GeoIP database {}: ",
            policy.display(),
            dir.join("missing.mmdb").display()
        )),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn compile_needs_an_output_file() {
    let demo = manifest_dir().join("../configs/demo.yaml");
    let output = run(&["compile", demo.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
}
