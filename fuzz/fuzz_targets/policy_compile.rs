//! The compiler on every policy the validator accepts: never a panic, and a generation that
//! compiles passes the data plane's own decoding and validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};
use switchyard_control::policy::parse_str;
use switchyard_table::generation::Generation;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(policy) = parse_str(&text, "fuzz.yaml") else {
        return;
    };
    let state = BackendState::new();
    let input = CompileInput {
        policy: &policy,
        generation: 1,
        state: &state,
    };
    match compile(&input, &mut BackendIds::new()) {
        Ok(g) => {
            let decoded = Generation::decode(&g.encode())
                .unwrap_or_else(|e| panic!("a compiled generation is refused: {e}"));
            assert_eq!(decoded, g, "encode/decode round trip");
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
});
