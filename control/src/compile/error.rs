//! Why a policy could not be compiled.

use std::fmt;
use std::path::PathBuf;

use switchyard_table::generation::{DecodeError, MAX_IF_ADDRS, MAX_ROUTE_POOLS};
use switchyard_table::lpm::LpmError;

use crate::maglev::MaglevError;

use super::ids::MAX_BACKEND_ID;

/// A validated policy that still cannot become a table generation. Nothing is published and
/// the backend ids are left as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    /// An interface has more own addresses of one family than a record holds.
    InterfaceAddresses {
        interface: String,
        /// 4 or 6.
        family: u8,
        count: usize,
    },
    /// A route names more pools (its pool and fallbacks) than a route record holds.
    RoutePools {
        service: String,
        /// Position of the route in the service's `routes`.
        route: usize,
        count: usize,
    },
    /// A region lists GeoIP countries but the policy names no database.
    GeoIpDatabaseMissing,
    /// The GeoIP database cannot be opened, read or decoded.
    GeoIp { path: PathBuf, message: String },
    /// A pool's Maglev table cannot be built.
    Maglev { pool: String, error: MaglevError },
    /// An LPM table cannot be built (in practice: it would outgrow its memory bound).
    Lpm {
        table: &'static str,
        error: LpmError,
    },
    /// Every backend id up to [`MAX_BACKEND_ID`] is taken.
    BackendIdsExhausted { in_use: usize },
    /// More records of some kind than a `u32` index can address.
    TooLarge { what: &'static str, count: usize },
    /// The compiled generation failed its own validation: a compiler bug, reported rather
    /// than published.
    Invalid(DecodeError),
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InterfaceAddresses {
                interface,
                family,
                count,
            } => write!(
                f,
                "interface `{interface}` has {count} IPv{family} addresses; the table holds at most \
                 {MAX_IF_ADDRS} per family"
            ),
            Self::RoutePools {
                service,
                route,
                count,
            } => write!(
                f,
                "service `{service}` route {route}: {count} pools (the pool and its fallbacks); a \
                 route may try at most {MAX_ROUTE_POOLS}"
            ),
            Self::GeoIpDatabaseMissing => f.write_str(
                "a region lists GeoIP countries but the policy has no `geoip_database`",
            ),
            Self::GeoIp { path, message } => {
                write!(f, "GeoIP database {}: {message}", path.display())
            }
            Self::Maglev { pool, error } => write!(f, "pool `{pool}`: {error}"),
            Self::Lpm { table, error } => write!(f, "{table}: {error}"),
            Self::BackendIdsExhausted { in_use } => write!(
                f,
                "no free backend id: {in_use} ids in use, at most {MAX_BACKEND_ID}"
            ),
            Self::TooLarge { what, count } => {
                write!(f, "{count} {what} do not fit the table format")
            }
            Self::Invalid(e) => write!(
                f,
                "compiled generation fails its own validation ({e}); this is a compiler bug"
            ),
        }
    }
}

impl std::error::Error for CompileError {}
