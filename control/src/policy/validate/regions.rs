//! `regions:`: prefixes and GeoIP countries.

use std::collections::HashMap;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::super::model::Region;
use super::super::raw::{NamedMap, RawRegion};
use super::super::values::{parse_country, parse_prefix};
use super::Validator;

impl Validator {
    pub(super) fn regions(
        &mut self,
        raw: &NamedMap<Spanned<RawRegion>>,
        have_geoip_database: bool,
    ) -> Vec<Region> {
        let mut regions = Vec::new();
        let mut prefix_owner: HashMap<IpNet, String> = HashMap::new();
        let mut country_owner: HashMap<String, String> = HashMap::new();
        for (name, node) in raw.iter() {
            let region = &node.value;
            let path = format!("regions.{}", name.value);
            let mut prefixes = Vec::new();
            if let Some(list) = &region.prefixes {
                for (i, prefix) in list.value.iter().enumerate() {
                    let prefix_path = format!("{path}.prefixes[{i}]");
                    let Some(net) = self.check(prefix, &prefix_path, parse_prefix(&prefix.value))
                    else {
                        continue;
                    };
                    match prefix_owner.get(&net) {
                        Some(owner) if *owner == name.value => self.error_at(
                            prefix,
                            &prefix_path,
                            format!("prefix {net} is listed twice in this region"),
                        ),
                        Some(owner) => self.error_at(
                            prefix,
                            &prefix_path,
                            format!(
                                "prefix {net} is already in region `{owner}`; a prefix belongs to one region \
                                 (nested prefixes are fine: the longest match wins)"
                            ),
                        ),
                        None => {
                            prefix_owner.insert(net, name.value.clone());
                            prefixes.push(net);
                        }
                    }
                }
            }
            let mut countries = Vec::new();
            if let Some(geoip) = &region.geoip {
                let geoip_path = format!("{path}.geoip");
                if !have_geoip_database {
                    self.error_at(
                        geoip,
                        &geoip_path,
                        "geoip countries need `geoip_database: PATH` at the top of the policy",
                    );
                }
                let list = &geoip.value.countries;
                if list.value.is_empty() {
                    self.error_at(
                        list,
                        format!("{geoip_path}.countries"),
                        "countries is empty",
                    );
                }
                for (i, country) in list.value.iter().enumerate() {
                    let country_path = format!("{geoip_path}.countries[{i}]");
                    let Some(code) =
                        self.check(country, &country_path, parse_country(&country.value))
                    else {
                        continue;
                    };
                    match country_owner.get(code.as_str()) {
                        Some(owner) if *owner == name.value => self.error_at(
                            country,
                            &country_path,
                            format!("country {code} is listed twice in this region"),
                        ),
                        Some(owner) => self.error_at(
                            country,
                            &country_path,
                            format!("country {code} is already in region `{owner}`; a country belongs to one region"),
                        ),
                        None => {
                            country_owner.insert(code.as_str().to_owned(), name.value.clone());
                            countries.push(code);
                        }
                    }
                }
            }
            let no_prefixes = region.prefixes.as_ref().is_none_or(|p| p.value.is_empty());
            let no_countries = region.geoip.is_none();
            if no_prefixes && no_countries {
                self.error_at(
                    node,
                    &path,
                    format!(
                        "region `{}` has no prefixes and no geoip countries, so no client can be in it",
                        name.value
                    ),
                );
            }
            regions.push(Region {
                name: name.value.clone(),
                prefixes,
                geoip_countries: countries,
            });
        }
        regions
    }
}
