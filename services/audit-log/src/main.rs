fn main() -> std::process::ExitCode {
    agentauth_launch::main::<audit_log::AuditLogService>()
}
