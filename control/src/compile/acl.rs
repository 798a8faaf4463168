//! The ACLs (global and per service) as LPM leaves and rule groups.
//!
//! Every rule's source prefix is a leaf of one source LPM; a leaf's group lists the rules whose
//! prefix covers it: the global rules first, then each service's, each in policy order, every
//! record tagged with its service ([`abi::ACL_GLOBAL`] for a global one). The data plane walks
//! the LPM once and scans that group, skipping other services' rules: the first rule that
//! matches among the global ones and the packet's own service's decides, and a packet that no
//! rule matches is allowed. Leaves matched by the same rules share a group.

use std::collections::BTreeMap;

use ipnet::IpNet;
use switchyard_table::generation::{self as abi, Generation};

use crate::policy::{AclAction, AclRule, Policy};

use super::services::protocol;
use super::{index_u32, CompileError, LpmInput};

pub(super) fn build(policy: &Policy, g: &mut Generation) -> Result<(), CompileError> {
    // (scope, rule): the global rules, then every service's.
    let mut all: Vec<(u16, &AclRule)> = policy.acl.iter().map(|r| (abi::ACL_GLOBAL, r)).collect();
    for (index, service) in policy.services.iter().enumerate() {
        if service.acl.is_empty() {
            continue;
        }
        let scope = index
            .checked_add(1)
            .and_then(|s| u16::try_from(s).ok())
            .ok_or(CompileError::TooLarge {
                what: "services before one with an ACL (a rule names its service in 16 bits)",
                count: index + 1,
            })?;
        all.extend(service.acl.iter().map(|r| (scope, r)));
    }
    let mut leaves: Vec<IpNet> = Vec::new();
    for (_, r) in &all {
        if !leaves.contains(&r.source) {
            leaves.push(r.source);
        }
    }
    let mut groups: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
    let mut lpm = LpmInput::default();
    for leaf in leaves {
        let rules: Vec<usize> = all
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| r.source.contains(&leaf))
            .map(|(i, _)| i)
            .collect();
        let group = if let Some(&group) = groups.get(&rules) {
            group
        } else {
            let first_rule = index_u32("ACL rules", g.acl_rules.len())?;
            for &i in &rules {
                let (scope, rule) = all[i];
                push_records(rule, scope, &mut g.acl_rules);
            }
            let end = index_u32("ACL rules", g.acl_rules.len())?;
            let group = index_u32("ACL groups", g.acl_groups.len())?;
            g.acl_groups.push(abi::AclGroup {
                first_rule,
                rule_count: end - first_rule,
            });
            groups.insert(rules, group);
            group
        };
        lpm.push(leaf, group + 1);
    }
    (g.acl_lpm_v4, g.acl_lpm_v6) = lpm.build("acl_lpm_v4", "acl_lpm_v6")?;
    Ok(())
}

/// One record per port range of the rule (one for "every port").
fn push_records(rule: &AclRule, service: u16, out: &mut Vec<abi::AclRule>) {
    let action = match rule.action {
        AclAction::Allow => abi::ACL_ALLOW,
        AclAction::Deny => abi::ACL_DENY,
    };
    let protocol = rule.protocol.map_or(0, protocol);
    let record = |port_lo, port_hi| abi::AclRule {
        action,
        protocol,
        port_lo,
        port_hi,
        service,
    };
    if rule.ports.is_empty() {
        out.push(record(0, u16::MAX));
    } else {
        out.extend(rule.ports.iter().map(|r| record(r.first, r.last)));
    }
}
