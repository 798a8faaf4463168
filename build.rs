//! Build script for the data plane: DPDK bindings and the C shim.
//!
//! With the `dpdk` feature (the default) it finds the system DPDK through pkg-config, generates
//! bindings with bindgen from `dataplane/dpdk/shim.h` (a narrow allowlist: the full DPDK header set
//! has packed types bindgen cannot lay out), and compiles `dataplane/dpdk/shim.c`, which wraps the
//! `static inline` fast-path functions. Generated code goes to `OUT_DIR` and is never committed.
//! Without the feature the crate is pure Rust and this script does nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::env;
    use std::path::PathBuf;
    use std::process::exit;

    const SHIM_H: &str = "dataplane/dpdk/shim.h";
    const SHIM_C: &str = "dataplane/dpdk/shim.c";

    fn fail(msg: &str) -> ! {
        eprintln!("\nerror: {msg}\n");
        println!("cargo:warning={msg}");
        exit(1);
    }

    pub fn build() {
        println!("cargo:rerun-if-changed={SHIM_H}");
        println!("cargo:rerun-if-changed={SHIM_C}");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

        let lib = pkg_config::Config::new()
            .atleast_version("22.11")
            .probe("libdpdk")
            .unwrap_or_else(|e| {
                fail(&format!(
                    "DPDK not found through pkg-config ({e}). Install Debian's DPDK development \
                     package: `apt-get install libdpdk-dev` (or run ci/setup)."
                ))
            });

        // pkg-config's cflags carry `-include rte_config.h` and `-march=...`: keep both for the
        // shim and for clang, so struct layouts match the libraries.
        let cflags = std::process::Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .unwrap_or_default();
        let mut extra: Vec<String> = Vec::new();
        let mut words = cflags.split_whitespace();
        while let Some(w) = words.next() {
            if w == "-include" {
                if let Some(f) = words.next() {
                    extra.push("-include".into());
                    extra.push(f.into());
                }
            } else if w.starts_with("-m") {
                extra.push(w.into());
            }
        }

        let mut cc = cc::Build::new();
        cc.file(SHIM_C).opt_level(3).warnings(true);
        for p in &lib.include_paths {
            cc.include(p);
        }
        for f in &extra {
            cc.flag(f);
        }
        cc.compile("switchyard_shim");

        let mut builder = bindgen::Builder::default()
            .header(SHIM_H)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
            .allowlist_function("sy_.*")
            .allowlist_function(
                "rte_eal_(init|cleanup|remote_launch|wait_lcore|mp_wait_lcore|process_type|get_runtime_dir)",
            )
            .allowlist_function("rte_(lcore_count|get_main_lcore|get_next_lcore|lcore_to_socket_id|socket_id|lcore_index)")
            .allowlist_function("rte_(strerror|get_tsc_hz|version|delay_us_sleep)")
            .allowlist_function("rte_pktmbuf_(pool_create|free_bulk)")
            .allowlist_function("rte_mempool_(free|avail_count|in_use_count|lookup)")
            .allowlist_function(
                "rte_eth_(dev_configure|dev_start|dev_stop|dev_close|dev_info_get|dev_count_avail|\
                 dev_socket_id|dev_get_name_by_port|dev_set_mtu|dev_get_mtu|rx_queue_setup|\
                 tx_queue_setup|link_get_nowait|stats_get|stats_reset|macaddr_get|\
                 promiscuous_enable|allmulticast_enable|find_next_owned_by|xstats_get|\
                 xstats_get_names|dev_adjust_nb_rx_tx_desc|link_speed_to_str|dev_rss_reta_update|dev_rss_hash_conf_get)",
            )
            .allowlist_type("rte_mbuf|rte_mempool|rte_eth_conf|rte_eth_dev_info|rte_eth_link|rte_eth_stats|rte_ether_addr|rte_eth_rxconf|rte_eth_txconf|rte_eth_xstat|rte_eth_xstat_name|rte_proc_type_t|rte_eth_rss_reta_entry64|rte_eth_rss_conf")
            .allowlist_var("RTE_MAX_LCORE|RTE_MAX_ETHPORTS|RTE_MBUF_DEFAULT_BUF_SIZE|RTE_PKTMBUF_HEADROOM|RTE_ETH_NAME_MAX_LEN|RTE_ETH_LINK_.*|RTE_ETH_RSS_(IP|TCP|UDP|IPV4|IPV6|NONFRAG_IPV4_TCP|NONFRAG_IPV4_UDP|NONFRAG_IPV6_TCP|NONFRAG_IPV6_UDP)|RTE_ETH_RETA_GROUP_SIZE|RTE_ETH_(RX|TX)_OFFLOAD_.*|RTE_ETH_MQ_.*|RTE_ETHER_.*|RTE_ETH_SPEED_NUM_.*")
            .clang_macro_fallback()
            .derive_default(true)
            .derive_debug(false)
            .layout_tests(false)
            .generate_comments(false)
            .prepend_enum_name(false);
        for p in &lib.include_paths {
            builder = builder.clang_arg(format!("-I{}", p.display()));
        }
        for f in &extra {
            builder = builder.clang_arg(f);
        }
        let bindings = builder.generate().unwrap_or_else(|e| {
            fail(&format!(
                "bindgen failed on {SHIM_H}: {e}. bindgen needs libclang: \
                 `apt-get install libclang-dev clang` (or run ci/setup)."
            ))
        });
        let out_path = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        bindings
            .write_to_file(out_path.join("dpdk_bindings.rs"))
            .unwrap_or_else(|e| fail(&format!("cannot write bindings: {e}")));
    }
}
