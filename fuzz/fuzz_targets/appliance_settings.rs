//! The data plane's appliance settings file on untrusted text: never a panic; settings that
//! parse also pass validation again (parse validates).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::settings::Settings;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Settings::parse(&text, "fuzz-settings.yaml") {
        Ok(settings) => {
            settings.validate().expect("parsed settings validate");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with("fuzz-settings.yaml"),
                "error without the file: {message}"
            );
        }
    }
});
