fn main() -> std::process::ExitCode {
    agentauth_launch::main::<token_vault::TokenVaultService>()
}
