/// A faster allocator than the system's for a service that allocates per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    agentauth_launch::main::<connector_executor::ConnectorExecutorService>()
}
