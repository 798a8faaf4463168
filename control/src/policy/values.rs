//! Parsers for the scalar notations of a policy: addresses, prefixes, MACs, ports, durations,
//! rates, percentages, names. Each returns the message an operator should read on failure,
//! without position or path (the caller adds those).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use super::model::{CountryCode, MacAddr, Percent, PortRange};
use super::raw::Scalar;

/// Longest object name.
pub const MAX_NAME_LEN: usize = 63;

/// Checks the spelling of an object name (service, pool, region, interface, backend):
/// ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit, 1 to 63 long.
/// Names end up in counter labels and CLI arguments, so they stay plain.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name `{name}` is {} characters long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    let first_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "name `{name}` may only use letters, digits, `-`, `_` and `.`, and must start with a letter or digit"
        ))
    }
}

/// An IP address without a prefix length.
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    let text = text.trim();
    if text.contains('/') {
        return Err(format!(
            "expected an IP address without a prefix length, found `{text}`"
        ));
    }
    IpAddr::from_str(text).map_err(|_| format!("`{text}` is not an IPv4 or IPv6 address"))
}

/// A network prefix in CIDR notation; a bare address is a host prefix (`/32`, `/128`).
/// Host bits must be clear: `10.1.0.1/16` is refused with the prefix that was probably meant.
pub fn parse_prefix(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if !text.contains('/') {
        return IpAddr::from_str(text)
            .map(IpNet::from)
            .map_err(|_| format!("`{text}` is not an IP address or a CIDR prefix"));
    }
    let net = parse_cidr(text)?;
    if net.addr() != net.network() {
        return Err(format!(
            "{text} has host bits set; did you mean {}/{}?",
            net.network(),
            net.prefix_len()
        ));
    }
    Ok(net)
}

/// An interface address with its on-link prefix length (`198.51.100.1/24`): host bits are
/// the point here, so they must not all be zero.
pub fn parse_interface_address(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if !text.contains('/') {
        return Err(format!(
            "interface address `{text}` needs a prefix length, e.g. {text}/24"
        ));
    }
    let net = parse_cidr(text)?;
    let host_len = match net {
        IpNet::V4(_) => 32,
        IpNet::V6(_) => 128,
    };
    // /31, /32, /127 and /128 have no network address to confuse with a host.
    if net.prefix_len() + 1 < host_len && net.addr() == net.network() {
        return Err(format!(
            "{text} is the network address of its subnet; an interface address needs a host part, e.g. {}",
            first_host(net)
        ));
    }
    if let Some(kind) = special_address(net.addr()) {
        return Err(format!(
            "{} is a {kind} address; an interface needs a unicast address",
            net.addr()
        ));
    }
    Ok(net)
}

fn first_host(net: IpNet) -> String {
    match net {
        IpNet::V4(n) => format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(n.network()).wrapping_add(1)),
            n.prefix_len()
        ),
        IpNet::V6(n) => format!(
            "{}/{}",
            Ipv6Addr::from(u128::from(n.network()).wrapping_add(1)),
            n.prefix_len()
        ),
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    IpNet::from_str(text).map_err(|_| {
        let (addr, len) = text.split_once('/').unwrap_or((text, ""));
        match IpAddr::from_str(addr) {
            Err(_) => format!("`{addr}` in `{text}` is not an IPv4 or IPv6 address"),
            Ok(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                format!("`{len}` in `{text}` is not a prefix length (0 to {max})")
            }
        }
    })
}

/// What kind of address `ip` is, when it is one no host on the network can have:
/// unspecified, loopback, multicast or broadcast.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        Some("broadcast")
    } else {
        None
    }
}

/// A MAC address written as six hexadecimal pairs separated by `:` or `-`.
pub fn parse_mac(text: &str) -> Result<MacAddr, String> {
    let text = text.trim();
    let bad =
        || format!("`{text}` is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)");
    let separator = if text.contains('-') { '-' } else { ':' };
    let mut octets = [0u8; 6];
    let mut parts = text.split(separator);
    for octet in &mut octets {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(MacAddr(octets))
}

/// A port number, 1 to 65535.
pub fn port_from_int(value: i64) -> Result<u16, String> {
    match u16::try_from(value) {
        Ok(0) | Err(_) => Err(format!("port {value} is out of range 1..=65535")),
        Ok(port) => Ok(port),
    }
}

/// A port (`443`) or an inclusive range (`"8000-8010"`).
pub fn parse_port_range(value: &Scalar) -> Result<PortRange, String> {
    match value {
        Scalar::Int(i) => {
            let i = i64::try_from(*i).unwrap_or(i64::MAX);
            port_from_int(i).map(PortRange::single)
        }
        Scalar::Float(x) => Err(format!(
            "expected a port or a range like 8000-8010, found {x}"
        )),
        Scalar::Text(text) => {
            let text = text.trim();
            let port = |part: &str| -> Result<u16, String> {
                let part = part.trim();
                let n: i64 = part.parse().map_err(|_| {
                    format!("expected a port or a range like 8000-8010, found `{text}`")
                })?;
                port_from_int(n)
            };
            match text.split_once('-') {
                None => port(text).map(PortRange::single),
                Some((first, last)) => {
                    let (first, last) = (port(first)?, port(last)?);
                    if first > last {
                        return Err(format!(
                            "port range {text} is backwards; did you mean {last}-{first}?"
                        ));
                    }
                    Ok(PortRange { first, last })
                }
            }
        }
    }
}

/// A duration: a whole number and a unit, `ms`, `s`, `m` or `h` (`500ms`, `1s`, `2m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad =
        || format!("`{text}` is not a duration (expected a number and a unit: 500ms, 1s, 2m, 1h)");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration `{text}` needs a unit: {text}ms, {text}s or {text}m"))?;
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let millis_per_unit = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{text}` is too long"))
}

/// A rate `N/s`, N from 1 upwards.
pub fn parse_rate(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a rate (expected a number per second like 200/s)");
    let (count, unit) = text.split_once('/').ok_or_else(bad)?;
    if unit.trim() != "s" {
        return Err(bad());
    }
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    match u32::try_from(count) {
        Ok(0) => Err(format!(
            "rate {text} is zero; leave the limit out to not limit"
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("rate {text} is too large (at most {}/s)", u32::MAX)),
    }
}

/// A percentage `0..=100` with at most two decimals: `5`, `0.5`, `"12.25%"`.
pub fn parse_percent(value: &Scalar) -> Result<Percent, String> {
    let (number, shown) = match value {
        #[allow(clippy::cast_precision_loss)] // only compared against 0..=100
        Scalar::Int(i) => (*i as f64, i.to_string()),
        Scalar::Float(x) => (*x, x.to_string()),
        Scalar::Text(text) => {
            let trimmed = text.trim();
            let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim();
            let x: f64 = number.parse().map_err(|_| {
                format!(
                    "`{text}` is not a percentage (expected a number from 0 to 100, like 5 or 0.5)"
                )
            })?;
            (x, trimmed.to_owned())
        }
    };
    if !(0.0..=100.0).contains(&number) {
        return Err(format!("percent {shown} is out of range 0..=100"));
    }
    let scaled = number * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return Err(format!(
            "percent {shown} has more than two decimals (the finest step is 0.01)"
        ));
    }
    // In 0.0..=10_000.0 and whole, so the conversion is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let basis_points = rounded as u16;
    Percent::from_basis_points(basis_points)
        .ok_or_else(|| format!("percent {shown} is out of range 0..=100"))
}

/// An ISO 3166-1 alpha-2 country code, written in capitals.
pub fn parse_country(text: &str) -> Result<CountryCode, String> {
    let bytes = text.as_bytes();
    if bytes.len() == 2 && bytes.iter().all(u8::is_ascii_uppercase) {
        return Ok(CountryCode([bytes[0], bytes[1]]));
    }
    if bytes.len() == 2 && bytes.iter().all(u8::is_ascii_alphabetic) {
        return Err(format!(
            "country `{text}` must be written in capitals: {}",
            text.to_ascii_uppercase()
        ));
    }
    Err(format!(
        "`{text}` is not an ISO 3166-1 alpha-2 country code (two capital letters, like US)"
    ))
}

/// Whether a Prometheus metric name is well formed: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// An HTTP request path: starts with `/`, visible ASCII only.
pub fn check_http_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("HTTP path `{path}` must start with `/`"));
    }
    if !path.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "HTTP path `{}` may only contain visible ASCII characters (percent-encode the rest)",
            path.escape_debug()
        ));
    }
    Ok(())
}

/// Primality by trial division; sizes are at most 2^24, so this takes microseconds.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The primes just below and just above `n` (for "did you mean" hints).
pub fn neighbouring_primes(n: u64) -> (Option<u64>, u64) {
    let below = (2..n).rev().find(|&k| is_prime(k));
    let above = (n + 1..).find(|&k| is_prime(k)).unwrap_or(n);
    (below, above)
}

/// Edit distance, for "did you mean" hints on misspelt names.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The closest of `candidates` to `name`, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(
            parse_prefix("10.1.0.0/16").unwrap(),
            "10.1.0.0/16".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_prefix("10.1.0.1/16").unwrap_err(),
            "10.1.0.1/16 has host bits set; did you mean 10.1.0.0/16?"
        );
        assert_eq!(
            parse_prefix("2001:db8:1::1/48").unwrap_err(),
            "2001:db8:1::1/48 has host bits set; did you mean 2001:db8:1::/48?"
        );
        assert_eq!(parse_prefix("192.0.2.7").unwrap().prefix_len(), 32);
        assert_eq!(
            parse_prefix("10.1.0.0/33").unwrap_err(),
            "`33` in `10.1.0.0/33` is not a prefix length (0 to 32)"
        );
        assert_eq!(
            parse_prefix("10.1.0/16").unwrap_err(),
            "`10.1.0` in `10.1.0/16` is not an IPv4 or IPv6 address"
        );
    }

    #[test]
    fn interface_addresses() {
        assert!(parse_interface_address("198.51.100.1/24").is_ok());
        assert!(parse_interface_address("198.51.100.0/31").is_ok());
        assert_eq!(
            parse_interface_address("198.51.100.0/24").unwrap_err(),
            "198.51.100.0/24 is the network address of its subnet; an interface address needs a host part, e.g. 198.51.100.1/24"
        );
        assert_eq!(
            parse_interface_address("198.51.100.1").unwrap_err(),
            "interface address `198.51.100.1` needs a prefix length, e.g. 198.51.100.1/24"
        );
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:00:00:00:fe").unwrap(),
            MacAddr([2, 0, 0, 0, 0, 0xfe])
        );
        assert_eq!(
            parse_mac("02-00-00-00-00-FE").unwrap().to_string(),
            "02:00:00:00:00:fe"
        );
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:00:00").is_err());
        assert!(parse_mac("2:00:00:00:00:00").is_err());
        assert!(parse_mac("zz:00:00:00:00:00").is_err());
    }

    #[test]
    fn ports() {
        let text = |s: &str| Scalar::Text(s.to_owned());
        assert_eq!(
            parse_port_range(&Scalar::Int(443)).unwrap(),
            PortRange::single(443)
        );
        assert_eq!(
            parse_port_range(&text("8000-8010")).unwrap(),
            PortRange {
                first: 8000,
                last: 8010
            }
        );
        assert_eq!(
            parse_port_range(&Scalar::Int(0)).unwrap_err(),
            "port 0 is out of range 1..=65535"
        );
        assert_eq!(
            parse_port_range(&Scalar::Int(70000)).unwrap_err(),
            "port 70000 is out of range 1..=65535"
        );
        assert_eq!(
            parse_port_range(&text("8010-8000")).unwrap_err(),
            "port range 8010-8000 is backwards; did you mean 8000-8010?"
        );
        assert_eq!(
            parse_port_range(&text("8000-99999")).unwrap_err(),
            "port 99999 is out of range 1..=65535"
        );
        assert!(parse_port_range(&text("http")).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration("1").unwrap_err(),
            "duration `1` needs a unit: 1ms, 1s or 1m"
        );
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("200/s").unwrap(), 200);
        assert!(parse_rate("200").is_err());
        assert!(parse_rate("200/m").is_err());
        assert!(parse_rate("0/s").is_err());
    }

    #[test]
    fn percents() {
        let p = |s: Scalar| parse_percent(&s).map(Percent::basis_points);
        assert_eq!(p(Scalar::Int(5)), Ok(500));
        assert_eq!(p(Scalar::Float(0.5)), Ok(50));
        assert_eq!(p(Scalar::Float(12.25)), Ok(1225));
        assert_eq!(p(Scalar::Text("0.01%".into())), Ok(1));
        assert_eq!(p(Scalar::Int(100)), Ok(10_000));
        assert_eq!(
            p(Scalar::Int(101)).unwrap_err(),
            "percent 101 is out of range 0..=100"
        );
        assert_eq!(
            p(Scalar::Float(0.125)).unwrap_err(),
            "percent 0.125 has more than two decimals (the finest step is 0.01)"
        );
        assert_eq!(Percent::from_basis_points(50).unwrap().to_string(), "0.5%");
        assert_eq!(
            Percent::from_basis_points(1225).unwrap().to_string(),
            "12.25%"
        );
        assert_eq!(
            Percent::from_basis_points(501).unwrap().to_string(),
            "5.01%"
        );
    }

    #[test]
    fn names_and_countries() {
        assert!(check_name("llama-70b").is_ok());
        assert!(check_name("eu-west.1").is_ok());
        assert!(check_name("-x").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("").is_err());
        assert_eq!(parse_country("US").unwrap().as_str(), "US");
        assert!(parse_country("us").unwrap_err().contains("capitals: US"));
        assert!(parse_country("USA").is_err());
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537));
        assert!(is_prime(2));
        assert!(!is_prime(65_536));
        assert!(!is_prime(1));
        assert_eq!(neighbouring_primes(65_536), (Some(65_521), 65_537));
    }

    #[test]
    fn typos() {
        assert_eq!(closest("llama-e", ["llama-eu", "image"]), Some("llama-eu"));
        assert_eq!(closest("zzz", ["llama-eu", "image"]), None);
    }
}
