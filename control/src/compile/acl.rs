//! The source ACL as LPM leaves and rule groups (first match preserved).

use std::collections::BTreeMap;

use ipnet::IpNet;
use switchyard_table::generation::{self as abi, Generation};

use crate::policy::{AclAction, AclRule, Policy};

use super::services::protocol;
use super::{index_u32, CompileError, LpmInput};

pub(super) fn build(policy: &Policy, g: &mut Generation) -> Result<(), CompileError> {
    let mut leaves: Vec<IpNet> = Vec::new();
    for r in &policy.acl {
        if !leaves.contains(&r.source) {
            leaves.push(r.source);
        }
    }
    // Leaves matched by the same rules share a group.
    let mut groups: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
    let mut lpm = LpmInput::default();
    for leaf in leaves {
        let rules: Vec<usize> = policy
            .acl
            .iter()
            .enumerate()
            .filter(|(_, r)| r.source.contains(&leaf))
            .map(|(i, _)| i)
            .collect();
        let group = if let Some(&group) = groups.get(&rules) {
            group
        } else {
            let first_rule = index_u32("ACL rules", g.acl_rules.len())?;
            for &i in &rules {
                push_records(&policy.acl[i], &mut g.acl_rules);
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
fn push_records(rule: &AclRule, out: &mut Vec<abi::AclRule>) {
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
        _pad: [0; 2],
    };
    if rule.ports.is_empty() {
        out.push(record(0, u16::MAX));
    } else {
        out.extend(rule.ports.iter().map(|r| record(r.first, r.last)));
    }
}
