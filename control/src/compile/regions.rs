//! Regions and the geo LPM tables: client source prefix → region index + 1.

use std::collections::BTreeMap;

use switchyard_table::generation::{self as abi, Generation};

use crate::policy::Policy;

use super::{geoip, index_u32, CompileError, LpmInput};

pub(super) fn build(policy: &Policy, g: &mut Generation) -> Result<(), CompileError> {
    g.regions = policy
        .regions
        .iter()
        .map(|r| abi::Region {
            name: abi::name_field(&r.name),
        })
        .collect();

    let mut input = LpmInput::default();
    let mut countries = BTreeMap::new();
    for (i, r) in policy.regions.iter().enumerate() {
        let value = index_u32("regions", i + 1)?;
        for c in &r.geoip_countries {
            countries.insert(c.0, value);
        }
    }
    if !countries.is_empty() {
        let path = policy
            .geoip_database
            .as_deref()
            .ok_or(CompileError::GeoIpDatabaseMissing)?;
        let explicit: Vec<_> = policy
            .regions
            .iter()
            .flat_map(|r| r.prefixes.iter().copied())
            .collect();
        let geo = geoip::read(path, &countries, &explicit)?;
        input.v4 = geo.v4;
        input.v6 = geo.v6;
    }
    // After GeoIP: on an equal prefix the later (explicit) one wins.
    for (i, r) in policy.regions.iter().enumerate() {
        let value = index_u32("regions", i + 1)?;
        for &p in &r.prefixes {
            input.push(p, value);
        }
    }
    (g.geo_lpm_v4, g.geo_lpm_v6) = input.build("geo_lpm_v4", "geo_lpm_v6")?;
    Ok(())
}
