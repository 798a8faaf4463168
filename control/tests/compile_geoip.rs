//! Regions by GeoIP country, from the tiny database in `tests/geoip/` (its networks are listed
//! in `tests/geoip/make_test_db.py`).

#[path = "compile/helpers.rs"]
mod helpers;

use helpers::*;
use switchyard_control::compile::{compile, BackendIds, BackendState, CompileError, CompileInput};
use switchyard_control::policy::Policy;
use switchyard_table::lpm;

fn geoip_policy() -> Policy {
    load("tests/compile/geoip.yaml")
}

fn try_compile(p: &Policy) -> Result<switchyard_table::generation::Generation, CompileError> {
    let state = BackendState::new();
    compile(
        &CompileInput {
            policy: p,
            generation: 1,
            state: &state,
        },
        &mut BackendIds::new(),
    )
}

#[test]
fn countries_classify_clients() {
    let g = compiled(&geoip_policy());
    g.validate().unwrap();
    for (client, region) in [
        ("10.10.1.1", Some("us-east")),   // US
        ("10.10.5.9", Some("eu-west")),   // DE, nested in a US network
        ("10.10.6.1", Some("us-east")),   // US again
        ("10.20.3.3", Some("eu-west")),   // CA by GeoIP, but inside eu-west's 10.20.0.0/15
        ("10.21.0.1", Some("eu-west")),   // eu-west's prefix, no GeoIP data
        ("10.30.1.5", Some("us-east")),   // DE by GeoIP, but us-east lists 10.30.1.0/24
        ("10.30.2.5", Some("eu-west")),   // DE
        ("10.40.0.1", Some("us-east")),   // US
        ("10.41.255.1", Some("us-east")), // US
        ("10.50.0.1", None),              // JP: no region lists it
        ("10.60.0.1", None),              // not in the database
        ("2001:db8:a::1", Some("us-east")),
        ("2001:db8:b:ffff::1", Some("eu-west")),
        ("2001:db8:c::1", None),
        // The database's IPv4 subtree is read as IPv4 only, not as IPv4-compatible IPv6.
        ("::10.10.1.1", None),
    ] {
        assert_eq!(region_of(&g, client).as_deref(), region, "{client}");
    }
}

#[test]
fn sibling_networks_of_one_region_are_merged() {
    let g = compiled(&geoip_policy());
    // 10.40.0.0/16 and 10.41.0.0/16 (both US) merge into one /15, which covers whole /16 root
    // entries without child groups; US's split 10.10.0.0/16 needs one child group (for DE's /24).
    let root = |a: u32| g.geo_lpm_v4[(a >> 16) as usize];
    assert_eq!(root(0x0a28_0000), 1);
    assert_eq!(root(0x0a29_0000), 1);
    assert_ne!(root(0x0a0a_0000) & lpm::CHILD, 0);
    assert_eq!(
        g.geo_lpm_v4.len(),
        lpm::ROOT_ENTRIES + 2 * lpm::GROUP_ENTRIES
    );
}

#[test]
fn a_missing_or_corrupt_database_is_named() {
    let dir = scratch("geoip-errors");
    let mut p = geoip_policy();

    let missing = dir.join("nowhere.mmdb");
    p.geoip_database = Some(missing.clone());
    let err = try_compile(&p).unwrap_err();
    assert!(
        matches!(&err, CompileError::GeoIp { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("nowhere.mmdb"), "{err}");

    let corrupt = dir.join("corrupt.mmdb");
    std::fs::write(&corrupt, b"this is not a MaxMind database").unwrap();
    p.geoip_database = Some(corrupt.clone());
    let err = try_compile(&p).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("GeoIP database {}: ", corrupt.display())),
        "{err}"
    );

    // Truncated: the metadata survives but the tree is cut.
    let real = std::fs::read(manifest_dir().join("tests/geoip/countries.mmdb")).unwrap();
    let cut = dir.join("cut.mmdb");
    std::fs::write(&cut, &real[real.len() / 3..]).unwrap();
    p.geoip_database = Some(cut);
    assert!(matches!(try_compile(&p), Err(CompileError::GeoIp { .. })));

    p.geoip_database = None;
    assert_eq!(
        try_compile(&p).unwrap_err(),
        CompileError::GeoIpDatabaseMissing
    );
}

#[test]
fn a_policy_without_countries_never_opens_the_database() {
    let mut p = demo();
    p.geoip_database = Some("/nonexistent/GeoLite2-Country.mmdb".into());
    assert!(try_compile(&p).is_ok());
}
