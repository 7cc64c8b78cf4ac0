fn main() -> std::process::ExitCode {
    agentauth_launch::main::<schema_watcher::SchemaWatcherService>()
}
