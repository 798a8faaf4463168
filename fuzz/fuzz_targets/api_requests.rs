//! What the control API takes from a caller, past authentication: `POST /v1/apply` bodies
//! (bytes that must be UTF-8 YAML, parsed and compiled as a policy file is), the query strings
//! of `trace` and `flows`, and the backend selectors of `drain`/`disable`/... applied to a
//! policy's text. The first byte picks the request; never a panic, every refusal an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};
use switchyard_control::daemon::query::{sample, trace_tuple, FlowsParams, TraceParams};
use switchyard_control::policy::edit::{set_backend_state, BackendSelector};
use switchyard_control::policy::{parse_str, AdminState};

/// A policy for the selector requests to edit.
const POLICY: &str = include_str!("../../configs/minimal.yaml");

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => apply(rest),
        1 => {
            let query = String::from_utf8_lossy(rest);
            if let Ok(p) = serde_urlencoded::from_str::<TraceParams>(&query) {
                let _ = std::hint::black_box(trace_tuple(&p));
            }
        }
        2 => {
            let query = String::from_utf8_lossy(rest);
            if let Ok(p) = serde_urlencoded::from_str::<FlowsParams>(&query) {
                let _ = std::hint::black_box(sample(&p, 1, 0));
            }
        }
        _ => {
            let selector = BackendSelector::parse(&String::from_utf8_lossy(rest));
            for to in [
                AdminState::Drained,
                AdminState::Disabled,
                AdminState::InService,
            ] {
                if let Ok(edit) = set_backend_state(POLICY, "policy.yaml", &selector, to) {
                    // An edit the daemon would apply must itself load.
                    parse_str(&edit.text, "policy.yaml")
                        .unwrap_or_else(|e| panic!("an edited policy does not load:\n{e}"));
                }
            }
        }
    }
});

/// `apply`: the daemon refuses bodies that are not UTF-8, then loads and compiles the text.
fn apply(body: &[u8]) {
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let Ok(policy) = parse_str(text, "<apply>") else {
        return;
    };
    let state = BackendState::new();
    let input = CompileInput {
        policy: &policy,
        generation: 1,
        state: &state,
    };
    let _ = std::hint::black_box(compile(&input, &mut BackendIds::new()));
}
