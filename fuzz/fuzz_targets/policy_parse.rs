//! The policy parser and validator on untrusted text (a policy file, `apply` bodies): never a
//! panic, and either a policy or errors that each name the file (and, when the problem has a
//! place, its line and column within the text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_control::policy::parse_str;

const LABEL: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_str(&text, LABEL) {
        Ok(policy) => {
            std::hint::black_box(&policy);
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error without a diagnostic");
            // YAML breaks lines at LF, CRLF and a lone CR (`str::lines` knows only the first two).
            let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 1;
            for line in errors.to_string().lines() {
                // Continuation lines of one diagnostic are indented.
                if line.starts_with(' ') {
                    continue;
                }
                let rest = line
                    .strip_prefix(LABEL)
                    .unwrap_or_else(|| panic!("error without the file: {line}"));
                // `:LINE:COL: …` when located.
                if let Some(at) = rest.strip_prefix(':') {
                    let mut parts = at.splitn(3, ':');
                    if let (Some(l), Some(_)) = (parts.next(), parts.next()) {
                        if let Ok(l) = l.parse::<usize>() {
                            assert!(l >= 1 && l <= lines, "line {l} outside the text: {line}");
                        }
                    }
                }
            }
        }
    }
});
