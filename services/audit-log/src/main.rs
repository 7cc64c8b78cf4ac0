/// A faster allocator than the system's for a service that allocates per request (the same in
/// every binary, so that benchmarks of one process compare like with like).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    agentauth_launch::main::<audit_log::AuditLogService>()
}
