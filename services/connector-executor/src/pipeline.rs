//! The one call path: "as this account, with this demand, send this request".
//!
//! Every request the executor sends for an account — a REST page, a `/batch`, a proxied
//! request, an MCP `tools/call` or `tools/list` — goes through [`Executor::run_as`], which owns
//! what they have in common:
//!
//! - the token: the account's cached token, fetched from token-vault when needed;
//! - the budget: the request's [`Demand`] of the account's rate slots, taken before it is sent
//!   and held until it is answered, waited for until the call's deadline or refused at once;
//!   the account's token and budget are each looked up once per call, not per attempt;
//! - a rejected token (401): reported to token-vault and the request sent once more with the
//!   token it returns, never twice;
//! - a rate limit (429): the whole token backs off `Retry-After`; a request that is safe to
//!   repeat is sent again when its slot comes before the deadline, any other is answered;
//! - the audit trail: the credential version that sent the last attempt.
//!
//! A protocol only says how to send one attempt and read its answer ([`Sender`]); it notes the
//! exchange's facts (status, Asana's request id, `Asana-Change`) in the trail it is given.

use std::future::Future;
use std::time::Duration;

use crate::Error;
use crate::executor::{CallContext, Executor};
use crate::rate::Demand;
use crate::tokens::AccessToken;
use crate::trail::Trail;

/// Asana's `Retry-After` when it sent none: long enough for in-flight requests to finish.
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How one attempt ended, as its sender reads the answer.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// The answer for the caller.
    Answer(T),
    /// The token was refused (401). `last` is the answer once the one retry is spent.
    Rejected { last: Result<T, Error> },
    /// The token is rate-limited (429). `last` is the answer when the request is not sent
    /// again.
    RateLimited {
        retry_after: Option<Duration>,
        last: Result<T, Error>,
    },
}

/// One kind of request: its demand on the account's budget, whether it may be sent again
/// after a 429, and how one attempt is sent with a token and its answer read.
pub(crate) trait Sender: Sync {
    type Output: Send;

    fn demand(&self) -> Demand;

    /// Safe to send again after a 429 (a read; a write is answered and the caller decides).
    fn repeatable(&self) -> bool;

    fn send(
        &self,
        token: &AccessToken,
        trail: &mut Trail,
    ) -> impl Future<Output = Result<Attempt<Self::Output>, Error>> + Send;
}

impl Executor {
    /// Runs `sender` as the account of `context`: see the module documentation.
    pub(crate) async fn run_as<S: Sender>(
        &self,
        context: &CallContext,
        sender: &S,
        trail: &mut Trail,
    ) -> Result<S::Output, Error> {
        let mut token = self.tokens.get(&context.account).await?;
        let budget = self.limiter.budget(&context.account);
        let mut retried = false;
        loop {
            trail.used(&token);
            let waiting = std::time::Instant::now();
            let permit = self.admit(context, &budget, sender.demand()).await;
            trail.waited_for_asana += waiting.elapsed();
            let permit = permit?;
            let sending = std::time::Instant::now();
            let sent = sender.send(&token, trail).await;
            trail.waited_for_asana += sending.elapsed();
            match sent? {
                Attempt::Answer(output) => return Ok(output),
                Attempt::Rejected { last } => {
                    drop(permit);
                    if retried {
                        return last;
                    }
                    token = self.tokens.rejected(&context.account, &token, None).await?;
                    retried = true;
                }
                Attempt::RateLimited { retry_after, last } => {
                    permit
                        .back_off(retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
                        .await;
                    drop(permit);
                    if !sender.repeatable() {
                        return last;
                    }
                    // The next admission waits out the back-off within the deadline, or
                    // refuses at once with the time to retry.
                }
            }
        }
    }
}
