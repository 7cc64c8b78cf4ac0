//! Regenerates `generated/rest_tools.json` from Asana's OpenAPI spec,
//! `crates/asana-sandbox/spec/asana_oas.yaml`: `cargo run -p asana-tools --bin asana-tools-generate`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = crate_dir.join("../asana-sandbox/spec/asana_oas.yaml");
    let out = crate_dir.join("generated/rest_tools.json");
    match run(&spec, &out) {
        Ok(count) => {
            eprintln!("wrote {count} tools to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("asana-tools-generate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(spec: &Path, out: &Path) -> Result<usize, String> {
    let yaml = std::fs::read_to_string(spec).map_err(|e| format!("{}: {e}", spec.display()))?;
    let tools = asana_tools::generate(&yaml)?;
    let mut json = serde_json::to_string_pretty(&tools).map_err(|e| e.to_string())?;
    json.push('\n');
    std::fs::write(out, json).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(tools.len())
}
