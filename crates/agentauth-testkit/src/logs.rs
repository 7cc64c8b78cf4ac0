//! Log capture for tests that run services in-process: every log line written by the test
//! process (the services, the sandbox, the tests) lands in one in-memory buffer, so a test can
//! prove no secret was logged.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Every log line written by this test process (the service, the sandbox, the tests).
pub fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Captured(writer.clone()))
            .try_init();
        buffer
    })
}

struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything captured so far, asserting the subscriber captured something.
pub fn captured() -> String {
    let text = String::from_utf8_lossy(
        &logs()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(!text.is_empty(), "the subscriber captured something");
    text
}

/// Asserts no captured log line holds any of `secrets`.
pub fn assert_logs_hold_none_of<S: AsRef<str>>(secrets: &[S]) {
    let text = captured();
    for secret in secrets {
        let secret = secret.as_ref();
        assert!(!secret.is_empty());
        assert!(!text.contains(secret), "a log line holds a secret");
    }
}
