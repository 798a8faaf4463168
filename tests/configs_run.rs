//! Every example policy in configs/ runs on the data plane as it is and forwards: compiled by the
//! control plane's compiler, loaded by `switchyard-dataplane run --table` on `net_pcap` ports,
//! a client's SYN to the first service's VIP (from a source outside every region, so the
//! catch-all route takes it) comes out encapsulated on the backend port, and a frame for
//! another MAC is counted `drop_not_our_mac`.

mod common;
mod fixtures;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use common::*;
use fixtures::frames::{frame, ipv4, tcp, udp, Pseudo, L2, V4};
use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};
use switchyard_control::policy::Protocol;

const CLIENT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);

#[test]
fn every_example_policy_runs_on_the_data_plane() {
    require_root();
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut ran = Vec::new();
    for entry in std::fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() || path.extension().is_none_or(|e| e != "yaml") {
            continue; // configs/grafana and the like
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.lines().any(|l| l.starts_with("services:")) {
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
        // The first service's VIP and port, from a client no region claims.
        let service = &policy.services[0];
        let IpAddr::V4(vip) = service.vip.addr() else {
            panic!("{}: the first service has an IPv6 VIP", path.display())
        };
        let dport = service.ports[0].first;
        let uplink = &policy.interfaces[0];
        let l2 = L2 {
            dst: uplink.mac.0,
            src: [0x02, 0, 0, 0, 0x7e, 0x01],
            vlans: Vec::new(),
        };
        let (proto, l4) = match service.protocol {
            Protocol::Tcp => (6, tcp(Pseudo::V4(CLIENT, vip), 40_000, dport, 0x02, &[])),
            Protocol::Udp => (17, udp(Pseudo::V4(CLIENT, vip), 40_000, dport, b"q")),
        };
        let to_vip = frame(&l2, 0x0800, &ipv4(&V4::new(CLIENT, vip, proto), &l4));
        let not_ours = frame(
            &L2 {
                dst: [0x02, 0, 0, 0, 0x7e, 0x99],
                ..l2.clone()
            },
            0x0800,
            &ipv4(&V4::new(CLIENT, vip, proto), &l4),
        );
        let input = dir.join("in.pcap");
        write_pcap(&input, &[to_vip, not_ours]);
        // The first interface on a net_pcap port replaying the input; the others (and the
        // backend side) capture what leaves.
        let mut settings = String::from("ports:\n");
        let mut vdevs = Vec::new();
        let out = dir.join("out.pcap");
        for (i, iface) in policy.interfaces.iter().enumerate() {
            let role = if i == 0 { "uplink" } else { "backend" };
            settings.push_str(&format!(
                "  - {{ device: net_pcap{i}, role: {role}, interface: {} }}\n",
                iface.name
            ));
            vdevs.push(if i == 0 {
                format!(
                    "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
                    input.display(),
                    dir.join("uplink-out.pcap").display()
                )
            } else {
                format!("--vdev=net_pcap{i},tx_pcap={}", out.display())
            });
        }
        settings.push_str("flow_table: { ipv4_flows: 4096, ipv6_flows: 4096 }\n");
        // The output is counted frame for frame: no start-up announcements.
        settings.push_str("neighbour: { announce: false }\n");
        std::fs::write(dir.join("appliance.yaml"), settings).unwrap();
        let run = run_with_timeout(
            Command::new(DATAPLANE)
                .args(["run", "--duration", "2", "--table"])
                .arg(&table)
                .arg("--config")
                .arg(dir.join("appliance.yaml"))
                .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
                .args(&vdevs),
            Duration::from_secs(60),
        );
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{}: {stdout}\n{}",
            path.display(),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(stdout.contains("table: generation 1 from"), "{stdout}");
        assert!(
            stdout.contains("counter forwarded_ipip_v4 1")
                || stdout.contains("counter forwarded_gue_v4 1"),
            "{}: the SYN to {vip}:{dport} was not forwarded\n{stdout}",
            path.display()
        );
        assert!(
            stdout.contains("counter drop_not_our_mac 1"),
            "{}: the frame for another MAC\n{stdout}",
            path.display()
        );
        // One-armed policies send it back out of the uplink; the others out of the backend port.
        let sent = if policy.interfaces.len() > 1 {
            read_pcap(&out)
        } else {
            read_pcap(&dir.join("uplink-out.pcap"))
        };
        assert_eq!(sent.len(), 1, "{}: one encapsulated packet", path.display());
        let _ = std::fs::remove_dir_all(&dir);
        ran.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    ran.sort();
    assert!(ran.len() >= 3, "example policies found: {ran:?}");
    eprintln!("ran on the data plane: {}", ran.join(", "));
}
