//! `acl:` and `limits:`.

use serde_saphyr::Spanned;

use super::super::model::{
    AclAction, AclRule, Limits, PortRange, RateLimit, DEFAULT_ICMP_PER_SECOND,
};
use super::super::raw::{RawAclRule, RawLimits};
use super::super::values::{parse_prefix, parse_rate};
use super::{Validator, MAX_ICMP_PER_SECOND};

/// The prefix of an IPv6 client's address the per-source limiter keys it by, by default.
const DEFAULT_SOURCE_IPV6_PREFIX: u8 = 64;

impl Validator {
    /// The rules of the global `acl:` or of a service's (`path` says which).
    pub(super) fn acl(&mut self, path: &str, raw: &[Spanned<RawAclRule>]) -> Vec<AclRule> {
        let list = path;
        let mut rules: Vec<(usize, AclRule)> = Vec::new();
        for (index, node) in raw.iter().enumerate() {
            let rule = &node.value;
            let path = format!("{list}[{index}]");
            let (action, prefix, key) = match (&rule.allow, &rule.deny) {
                (Some(_), Some(deny)) => {
                    self.error_at(deny, &path, "an ACL rule has `allow:` or `deny:`, not both");
                    continue;
                }
                (None, None) => {
                    self.error_at(
                        node,
                        &path,
                        "an ACL rule needs `allow: PREFIX` or `deny: PREFIX`",
                    );
                    continue;
                }
                (Some(allow), None) => (AclAction::Allow, allow, "allow"),
                (None, Some(deny)) => (AclAction::Deny, deny, "deny"),
            };
            let source = self.check(prefix, format!("{path}.{key}"), parse_prefix(&prefix.value));
            let ports = match &rule.ports {
                None => Some(Vec::new()),
                Some(ports) => self.ports(
                    &format!("{path}.ports"),
                    ports,
                    "leave it out to match every port",
                ),
            };
            let (Some(source), Some(ports)) = (source, ports) else {
                continue;
            };
            let candidate = AclRule {
                action,
                source,
                ports,
                protocol: rule.protocol.as_ref().map(|p| p.value),
            };
            if let Some((earlier_index, earlier)) =
                rules.iter().find(|(_, e)| acl_covers(e, &candidate))
            {
                let verb = match earlier.action {
                    AclAction::Allow => "allow",
                    AclAction::Deny => "deny",
                };
                self.error_at(
                    node,
                    &path,
                    format!(
                        "rule can never match: {list}[{earlier_index}] ({verb} {}) above it matches every packet this one would",
                        earlier.source
                    ),
                );
                continue;
            }
            rules.push((index, candidate));
        }
        rules.into_iter().map(|(_, r)| r).collect()
    }

    pub(super) fn limits(&mut self, raw: Option<&Spanned<RawLimits>>) -> Limits {
        let mut limits = Limits {
            new_flows_per_source: None,
            source_ipv6_prefix: DEFAULT_SOURCE_IPV6_PREFIX,
            icmp_per_second: DEFAULT_ICMP_PER_SECOND,
        };
        let Some(raw) = raw else {
            return limits;
        };
        if let Some(node) = &raw.value.new_flows_per_source {
            let path = "limits.new_flows_per_source";
            let rate = self.check(
                &node.value.rate,
                format!("{path}.rate"),
                parse_rate(&node.value.rate.value),
            );
            let burst = match (&node.value.burst, rate) {
                (Some(burst), _) => self.int_in(
                    Some(burst),
                    &format!("{path}.burst"),
                    "burst",
                    (1, i64::from(u32::MAX)),
                    0,
                ),
                (None, rate) => rate,
            };
            if let Some(prefix) = self.int_in(
                node.value.ipv6_prefix.as_ref(),
                &format!("{path}.ipv6_prefix"),
                "ipv6_prefix",
                (0, 64),
                DEFAULT_SOURCE_IPV6_PREFIX,
            ) {
                limits.source_ipv6_prefix = prefix;
            }
            if let (Some(per_second), Some(burst)) = (rate, burst) {
                limits.new_flows_per_source = Some(RateLimit { per_second, burst });
            }
        }
        if let Some(icmp) = self.int_in(
            raw.value.icmp_per_second.as_ref(),
            "limits.icmp_per_second",
            "icmp_per_second",
            (0, MAX_ICMP_PER_SECOND),
            DEFAULT_ICMP_PER_SECOND,
        ) {
            limits.icmp_per_second = icmp;
        }
        limits
    }
}

/// Whether `earlier` matches every packet `later` matches (so `later` is dead).
fn acl_covers(earlier: &AclRule, later: &AclRule) -> bool {
    if !earlier.source.contains(&later.source) {
        return false;
    }
    if earlier.protocol.is_some() && earlier.protocol != later.protocol {
        return false;
    }
    if earlier.ports.is_empty() {
        return true;
    }
    if later.ports.is_empty() {
        return false;
    }
    // Both lists are sorted and non-overlapping; merge adjacent earlier ranges first.
    let mut merged: Vec<PortRange> = Vec::new();
    for range in &earlier.ports {
        match merged.last_mut() {
            Some(last) if u32::from(last.last) + 1 >= u32::from(range.first) => {
                last.last = last.last.max(range.last);
            }
            _ => merged.push(*range),
        }
    }
    later
        .ports
        .iter()
        .all(|l| merged.iter().any(|m| m.covers(*l)))
}
