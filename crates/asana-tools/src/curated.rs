//! The curated tools.

use crate::Tool;

/// Every curated tool.
pub(crate) fn tools() -> Vec<Tool> {
    Vec::new()
}
