fn main() -> std::process::ExitCode {
    agentauth_launch::main::<connector_executor::ConnectorExecutorService>()
}
