//! Every example policy in configs/ runs on the data plane as it is: compiled by the control
//! plane's compiler, loaded by `switchyard-dataplane run --table`, and traffic flows through the
//! pipeline (net_null frames are not addressed to the appliance, so they are dropped and counted
//! — the point is that the table is accepted and the workers run with it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};

#[test]
fn every_example_policy_runs_on_the_data_plane() {
    require_root();
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut ran = Vec::new();
    for entry in std::fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if path.extension().is_none_or(|e| e != "yaml")
            || !text.lines().any(|l| l.starts_with("services:"))
        {
            continue; // appliance settings, not a policy
        }
        let policy = switchyard_control::policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let g = compile(
            &CompileInput {
                policy: &policy,
                generation: 1,
                state: &BackendState::new(),
            },
            &mut BackendIds::new(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dir = scratch("configs-run");
        let table = dir.join("table.bin");
        std::fs::write(&table, g.encode()).unwrap();
        // Bind every interface of the policy to a net_null port.
        let mut settings = String::from("ports:\n");
        let mut vdevs = Vec::new();
        for (i, iface) in policy.interfaces.iter().enumerate() {
            let role = if i == 0 { "uplink" } else { "backend" };
            settings.push_str(&format!(
                "  - {{ device: net_null{i}, role: {role}, interface: {} }}\n",
                iface.name
            ));
            vdevs.push(format!("--vdev=net_null{i}"));
        }
        settings.push_str("flow_table: { ipv4_flows: 4096, ipv6_flows: 4096 }\n");
        std::fs::write(dir.join("appliance.yaml"), settings).unwrap();
        let out = run_with_timeout(
            Command::new(DATAPLANE)
                .args(["run", "--duration", "1", "--table"])
                .arg(&table)
                .arg("--config")
                .arg(dir.join("appliance.yaml"))
                .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
                .args(&vdevs),
            Duration::from_secs(60),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {stdout}\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("table: generation 1 from"), "{stdout}");
        let r = result_fields(&stdout);
        assert!(
            field_u64(&r, "rx_pkts") > 0,
            "{}: traffic reached the pipeline\n{stdout}",
            path.display()
        );
        assert!(
            stdout.contains("counter drop_not_our_mac"),
            "net_null's zero frames are counted as not for us\n{stdout}"
        );
        ran.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    ran.sort();
    assert!(ran.len() >= 3, "example policies found: {ran:?}");
    eprintln!("ran on the data plane: {}", ran.join(", "));
}
