//! The emitter against a recording AuditLog peer, served in-process by the real gRPC chassis
//! (API keys checked, callers bound to tenants): batching and order, spooling while audit-log
//! is down or failing, replay after a crash, the spool limit, dead letters, a hanging peer and
//! shutdown. The suite against the real audit-log service lives with the end-to-end tests.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentauth_audit::{
    EmitError, Emitter, EmitterConfig, Event, Outcome, StartError, State, Stats, action,
};
use agentauth_grpc::{
    AlwaysReady, Api, ApiKey, Caller, CallerConfig, Policy, Role, Server, ServerConfig,
};
use agentauth_proto::audit::v1 as pb;
use agentauth_proto::audit::v1::audit_log_server::{AuditLog, AuditLogServer, SERVICE_NAME};
use agentauth_testkit::assert_eventually;
use prost::Message as _;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// The recording peer's RPCs: it accepts only `Append`, as audit-log's `writer` role.
const RECORDER_POLICY: Policy = Policy {
    service: SERVICE_NAME,
    rpcs: &["Append", "Query", "Export", "VerifyChain", "PurgeBefore"],
    roles: &[Role {
        name: "writer",
        purpose: "the emitter under test",
        rpcs: &["Append"],
    }],
};

const WITHIN: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Accept,
    /// Every `Append` fails with UNAVAILABLE.
    Unavailable,
    /// Every `Append` waits forever.
    Hang,
}

#[derive(Debug, Default)]
struct Log {
    mode: Mode,
    /// The event ids of each `Append` it acknowledged, in arrival order.
    appends: Vec<Vec<String>>,
}

/// An AuditLog that records what it acknowledges, and refuses events of tenants its caller is
/// not bound to (PERMISSION_DENIED) and batches over 1,000 events, as audit-log does.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Log>>);

impl Recorder {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().expect("log lock")
    }
}

#[tonic::async_trait]
impl AuditLog for Recorder {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let mode = self.log().mode;
        match mode {
            Mode::Unavailable => return Err(Status::unavailable("switched off by the test")),
            Mode::Hang => std::future::pending::<()>().await,
            Mode::Accept => {}
        }
        let caller = Caller::of(&request)?;
        let events = &request.get_ref().events;
        for event in events {
            caller.check_tenant(&event.tenant)?;
        }
        if events.len() > 1000 {
            return Err(Status::invalid_argument(
                "a batch holds at most 1000 events",
            ));
        }
        let ids: Vec<String> = events.iter().map(|event| event.event_id.clone()).collect();
        let results = ids
            .iter()
            .map(|id| pb::AppendResult {
                event_id: id.clone(),
                ..Default::default()
            })
            .collect();
        self.log().appends.push(ids);
        Ok(Response::new(pb::AppendResponse { results }))
    }

    async fn query(
        &self,
        _: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        Err(Status::unimplemented("recorder"))
    }

    type ExportStream = BoxStream<pb::ExportResponse>;

    async fn export(
        &self,
        _: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        Err(Status::unimplemented("recorder"))
    }

    async fn verify_chain(
        &self,
        _: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        Err(Status::unimplemented("recorder"))
    }

    async fn purge_before(
        &self,
        _: Request<pb::PurgeBeforeRequest>,
    ) -> Result<Response<pb::PurgeBeforeResponse>, Status> {
        Err(Status::unimplemented("recorder"))
    }
}

type Served = JoinHandle<Result<(), agentauth_grpc::server::Error>>;

/// The recorder on a fixed loopback port, which can be stopped and started again.
struct Peer {
    recorder: Recorder,
    key: ApiKey,
    address: SocketAddr,
    running: Option<(CancellationToken, Served)>,
}

impl Peer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut peer = Self {
            recorder: Recorder::default(),
            key: ApiKey::generate(),
            address: listener.local_addr().expect("address"),
            running: None,
        };
        peer.serve(listener);
        peer
    }

    fn serve(&mut self, listener: TcpListener) {
        let config = ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            callers: vec![CallerConfig {
                name: "emitter-test".into(),
                key_sha256: self.key.hash(),
                previous_key_sha256: None,
                tenants: vec!["acme".into()],
                connections: vec!["*".into()],
                tools: vec!["*".into()],
                roles: vec!["writer".into()],
                rpcs: Vec::new(),
            }],
            ..ServerConfig::default()
        };
        let server = Server::new("audit-log-recorder", config, &[&RECORDER_POLICY])
            .expect("valid server config");
        let api = Api {
            routes: tonic::service::Routes::new(AuditLogServer::new(self.recorder.clone())),
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(server.serve(listener, api, AlwaysReady, shutdown.clone()));
        self.running = Some((shutdown, served));
    }

    async fn stop(&mut self) {
        if let Some((shutdown, served)) = self.running.take() {
            shutdown.cancel();
            served
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.address)
            .await
            .expect("rebind the same port");
        self.serve(listener);
    }

    fn set_mode(&self, mode: Mode) {
        self.recorder.log().mode = mode;
    }

    fn appends(&self) -> Vec<Vec<String>> {
        self.recorder.log().appends.clone()
    }

    /// Every id acknowledged, first arrivals only (a re-send is allowed, and stored once).
    fn delivered(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.appends()
            .into_iter()
            .flatten()
            .filter(|id| seen.insert(id.clone()))
            .collect()
    }

    /// An emitter configuration for this peer, with its key in a file and a spool in `dir`.
    fn config(&self, dir: &TempDir) -> EmitterConfig {
        let key_file = dir.path().join("audit-log.key");
        std::fs::write(&key_file, self.key.expose()).expect("write key file");
        EmitterConfig {
            url: format!("http://{}", self.address),
            api_key_file: Some(key_file),
            spool_dir: dir.path().join("spool"),
            flush_interval: Duration::from_millis(10),
            request_timeout: Duration::from_secs(2),
            ..EmitterConfig::default()
        }
    }
}

fn event(n: usize) -> Event {
    let mut event = Event::new(
        "acme",
        "emitter-test",
        action::TOOL_EXECUTED,
        Outcome::Success,
    );
    event.details.insert("n".into(), n.into());
    event
}

/// Emits `count` events and returns their ids.
fn emit(emitter: &Emitter, count: usize) -> Vec<Uuid> {
    (0..count)
        .map(|n| {
            let event = event(n);
            let id = event.id;
            emitter.emit(event).expect("accepted");
            id
        })
        .collect()
}

fn strings(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

fn segments(spool: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(spool)
        .expect("spool dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    found.sort();
    found
}

/// Reads a spool file by its documented format: records of a 4-byte big-endian length and an
/// encoded `AppendRequest`. Returns the event ids of each record.
fn read_records(path: &Path) -> Vec<Vec<String>> {
    let bytes = std::fs::read(path).expect("spool file");
    let mut rest = bytes.as_slice();
    let mut records = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let request = pb::AppendRequest::decode(&tail[..len]).expect("a whole record");
        records.push(
            request
                .events
                .into_iter()
                .map(|event| event.event_id)
                .collect(),
        );
        rest = &tail[len..];
    }
    records
}

#[tokio::test]
async fn batches_many_events_into_few_appends_in_emit_order() {
    let peer = Peer::start().await;
    let dir = TempDir::new().expect("temp dir");
    let emitter = Emitter::start(peer.config(&dir)).expect("start");

    let ids = emit(&emitter, 2000);
    emitter.flush().await.expect("flushed");

    let sizes: Vec<usize> = peer.appends().iter().map(Vec::len).collect();
    assert!(
        sizes.len() <= 8 && sizes.iter().all(|&size| size <= 500),
        "append sizes: {sizes:?}"
    );
    assert_eq!(peer.delivered(), strings(&ids));
    assert_eq!(
        emitter.stats(),
        Stats {
            emitted: 2000,
            delivered: 2000,
            spooled: 0,
            dead_lettered: 0
        }
    );
    assert_eq!(emitter.state(), State::Delivering);
    assert!(segments(&dir.path().join("spool")).is_empty());
    emitter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn spools_while_audit_log_is_down_then_delivers_everything_in_order() {
    let mut peer = Peer::start().await;
    let dir = TempDir::new().expect("temp dir");
    let spool = dir.path().join("spool");
    let emitter = Emitter::start(peer.config(&dir)).expect("start");
    let mut ids = emit(&emitter, 100);
    emitter.flush().await.expect("delivered");

    peer.stop().await;
    for _ in 0..3 {
        ids.extend(emit(&emitter, 100));
        emitter.flush().await.expect("spooled");
    }
    assert_eq!(emitter.stats().spooled, 300);
    assert_eq!(emitter.state(), State::Spooling);
    assert!(
        emitter.is_healthy(),
        "a spooling emitter still records every event"
    );
    let files = segments(&spool);
    let on_disk: usize = files
        .iter()
        .flat_map(|file| read_records(file))
        .map(|ids| ids.len())
        .sum();
    assert_eq!(on_disk, 300, "every spooled event is on disk: {files:?}");
    ids.extend(emit(&emitter, 50)); // behind the spooled ones

    peer.restart().await;
    assert_eventually!(
        WITHIN,
        async { peer.delivered().len() == ids.len() },
        "all delivered"
    );
    assert_eq!(peer.delivered(), strings(&ids), "in emit order");
    assert_eventually!(
        WITHIN,
        async { emitter.state() == State::Delivering && segments(&spool).is_empty() },
        "spool drained and deleted"
    );
    let stats = emitter.stats();
    assert_eq!(
        (stats.emitted, stats.delivered, stats.dead_lettered),
        (450, 450, 0)
    );
    emitter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_crashed_emitters_spool_is_replayed_before_new_events() {
    let mut peer = Peer::start().await;
    peer.stop().await;
    let dir = TempDir::new().expect("temp dir");
    let config = peer.config(&dir);

    // A process that spools events, then dies: its runtime is dropped with the task in it.
    let before_crash = {
        let config = config.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let ids = runtime.block_on(async {
                let emitter = Emitter::start(config).expect("start");
                let ids = emit(&emitter, 200);
                emitter.flush().await.expect("spooled");
                assert_eq!(emitter.stats().spooled, 200);
                ids
            });
            drop(runtime);
            ids
        })
        .join()
        .expect("crashing process")
    };
    assert!(!segments(&config.spool_dir).is_empty());

    let emitter = Emitter::start(config.clone()).expect("start after the crash");
    assert!(
        matches!(
            Emitter::start(config.clone()),
            Err(StartError::Locked { .. })
        ),
        "one emitter per spool directory"
    );
    assert_eq!(
        emitter.state(),
        State::Spooling,
        "replays the old spool first"
    );
    let after_restart = emit(&emitter, 100);
    emitter.flush().await.expect("spooled");

    peer.restart().await;
    let expected = strings(&[before_crash, after_restart].concat());
    assert_eventually!(
        WITHIN,
        async { peer.delivered().len() == expected.len() },
        "all delivered"
    );
    assert_eq!(peer.delivered(), expected);
    assert_eventually!(
        WITHIN,
        async { segments(&config.spool_dir).is_empty() },
        "spool deleted"
    );
    emitter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_full_spool_refuses_new_events_and_loses_none() {
    let mut peer = Peer::start().await;
    peer.stop().await;
    let dir = TempDir::new().expect("temp dir");
    let config = EmitterConfig {
        spool_max_bytes: 4_000,
        ..peer.config(&dir)
    };
    let emitter = Emitter::start(config.clone()).expect("start");

    let mut accepted = Vec::new();
    loop {
        let event = event(accepted.len());
        let id = event.id;
        match emitter.emit(event) {
            Ok(()) => accepted.push(id),
            Err(EmitError::SpoolFull) => break,
            Err(other) => panic!("unexpected refusal: {other}"),
        }
        assert!(accepted.len() < 500, "the spool never filled");
        let count = accepted.len() as u64;
        assert_eventually!(
            WITHIN,
            async { emitter.stats().spooled == count || emitter.state() == State::SpoolFull },
            "event {count} spooled or held"
        );
    }
    assert_eq!(emitter.state(), State::SpoolFull);
    assert!(!emitter.is_healthy());
    assert!(matches!(emitter.emit(event(0)), Err(EmitError::SpoolFull)));
    let on_disk: u64 = segments(&config.spool_dir)
        .iter()
        .map(|file| std::fs::metadata(file).expect("segment").len())
        .sum();
    assert!(
        on_disk <= 4_000,
        "the spool stays within its limit: {on_disk} bytes"
    );

    peer.restart().await;
    assert_eventually!(
        WITHIN,
        async { emitter.state() == State::Delivering },
        "spool drained"
    );
    assert_eventually!(
        WITHIN,
        async { peer.delivered().len() == accepted.len() },
        "all delivered"
    );
    assert_eq!(
        peer.delivered(),
        strings(&accepted),
        "every accepted event, in order"
    );
    assert!(emitter.emit(event(0)).is_ok(), "accepts events again");
    emitter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_waits_for_room_instead_of_dropping_while_audit_log_stalls() {
    let peer = Peer::start().await;
    peer.set_mode(Mode::Hang);
    let dir = TempDir::new().expect("temp dir");
    let config = EmitterConfig {
        queue_capacity: 8,
        batch_size: 4,
        spool_max_bytes: 2_000,
        request_timeout: Duration::from_millis(300),
        ..peer.config(&dir)
    };
    let emitter = Emitter::start(config).expect("start");

    // Far more events than the queue and the spool hold, recorded while audit-log hangs.
    let recording: Vec<_> = (0..200)
        .map(|n| {
            let emitter = emitter.clone();
            let event = event(n);
            let id = event.id;
            tokio::spawn(async move {
                emitter
                    .record(event)
                    .await
                    .expect("recorded, never refused");
                id
            })
        })
        .collect();
    assert_eventually!(
        WITHIN,
        async { emitter.state() == State::SpoolFull },
        "the spool fills while audit-log hangs"
    );
    assert!(!emitter.keeps_up(), "a service reports itself unready now");
    assert!(
        recording.iter().any(|task| !task.is_finished()),
        "recorders wait for room instead of dropping their events"
    );

    peer.set_mode(Mode::Accept);
    let mut ids = Vec::new();
    for task in recording {
        ids.push(task.await.expect("task"));
    }
    assert_eventually!(
        WITHIN,
        async { peer.delivered().len() == ids.len() },
        "every recorded event reaches audit-log"
    );
    let delivered: HashSet<String> = peer.delivered().into_iter().collect();
    assert!(
        strings(&ids).iter().all(|id| delivered.contains(id)),
        "none was lost"
    );
    assert_eventually!(WITHIN, async { emitter.keeps_up() }, "keeps up again");
    emitter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn with_sync_durability_record_returns_once_the_event_is_on_disk_and_a_crash_loses_none() {
    let peer = Peer::start().await;
    peer.set_mode(Mode::Hang);
    let dir = TempDir::new().expect("temp dir");
    let config = EmitterConfig {
        durability: agentauth_audit::emitter::Durability::Sync,
        flush_interval: Duration::from_secs(60),
        ..peer.config(&dir)
    };
    let emitter = Emitter::start(config.clone()).expect("start");
    let mut ids = Vec::new();
    for n in 0..20 {
        let event = event(n);
        ids.push(event.id);
        emitter.record(event).await.expect("journaled");
    }
    // What a crash right now leaves: the journal holds every recorded event, though none
    // was delivered or spooled (the batch waits for its flush interval, audit-log hangs).
    let journal = dir.path().join("spool/journal");
    let journaled: Vec<String> = read_records(&journal).into_iter().flatten().collect();
    assert_eq!(journaled, strings(&ids));
    assert!(peer.delivered().is_empty() && segments(&config.spool_dir).is_empty());

    // The next run on the directory replays the journal (here a copy, as the emitter of the
    // "crashed" run still holds the directory's lock).
    let next_dir = TempDir::new().expect("temp dir");
    std::fs::create_dir_all(next_dir.path().join("spool")).expect("spool dir");
    std::fs::copy(&journal, next_dir.path().join("spool/journal")).expect("copy");
    peer.set_mode(Mode::Accept);
    let next = Emitter::start(EmitterConfig {
        durability: agentauth_audit::emitter::Durability::Async,
        ..peer.config(&next_dir)
    })
    .expect("start");
    assert_eventually!(
        WITHIN,
        async { peer.delivered().len() == ids.len() },
        "the journal's events are delivered after a restart"
    );
    assert_eq!(peer.delivered(), strings(&ids), "in order");
    assert_eventually!(
        WITHIN,
        async {
            std::fs::metadata(next_dir.path().join("spool/journal")).is_ok_and(|m| m.len() == 0)
        },
        "and the journal is emptied"
    );
    next.shutdown(Duration::from_secs(1)).await;
    emitter.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn refused_batches_go_to_the_dead_letter_file_and_later_events_go_on() {
    let peer = Peer::start().await;
    let dir = TempDir::new().expect("temp dir");
    let emitter = Emitter::start(peer.config(&dir)).expect("start");
    // The peer's caller is bound to tenant `acme`: another tenant is PERMISSION_DENIED for good.
    let forbidden = || {
        Event::new(
            "globex",
            "emitter-test",
            action::TOOL_EXECUTED,
            Outcome::Success,
        )
    };
    let (mut good, mut refused) = (Vec::new(), Vec::new());
    let mut round = async |emitter: &Emitter| {
        for refuse in [false, true, false] {
            let event = if refuse { forbidden() } else { event(0) };
            (if refuse { &mut refused } else { &mut good }).push(event.id);
            emitter.emit(event).expect("accepted");
            emitter.flush().await.expect("settled");
        }
    };

    round(&emitter).await; // sent directly
    peer.set_mode(Mode::Unavailable);
    round(&emitter).await; // spooled, then replayed
    assert_eq!(emitter.stats().spooled, 3);
    peer.set_mode(Mode::Accept);

    assert_eventually!(
        WITHIN,
        async { emitter.state() == State::Delivering },
        "spool drained"
    );
    assert_eq!(peer.delivered(), strings(&good));
    assert_eq!(emitter.stats().dead_lettered, 2);
    let dead = read_records(&dir.path().join("spool").join("dead-letter"));
    assert_eq!(dead, vec![strings(&refused[..1]), strings(&refused[1..])]);
    emitter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_never_waits_while_audit_log_hangs() {
    let peer = Peer::start().await;
    peer.set_mode(Mode::Hang);
    let dir = TempDir::new().expect("temp dir");
    let config = EmitterConfig {
        queue_capacity: 100,
        request_timeout: Duration::from_secs(3),
        ..peer.config(&dir)
    };
    let emitter = Emitter::start(config).expect("start");

    let (mut accepted, mut queue_full) = (Vec::new(), 0);
    for n in 0..2000 {
        let event = event(n);
        let id = event.id;
        match emitter.emit(event) {
            Ok(()) => accepted.push(id),
            Err(EmitError::QueueFull) => queue_full += 1,
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    // An emit that waited for audit-log would wait out a request_timeout, after which the
    // hung batch is spooled: none has been, so no emit waited.
    assert_eq!(
        emitter.stats().spooled,
        0,
        "every emit returned before the first request timed out"
    );
    assert!(
        queue_full > 0,
        "the queue filled while audit-log hung, and emit said so"
    );

    assert_eventually!(
        WITHIN,
        async { emitter.stats().spooled > 0 },
        "the hung batch is spooled"
    );
    peer.set_mode(Mode::Accept);
    assert_eventually!(
        WITHIN,
        async { peer.delivered().len() == accepted.len() },
        "all delivered"
    );
    assert_eq!(peer.delivered(), strings(&accepted));
    emitter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_is_bounded_by_its_grace_and_spools_what_is_left() {
    let peer = Peer::start().await;
    peer.set_mode(Mode::Hang);
    let dir = TempDir::new().expect("temp dir");
    let config = EmitterConfig {
        request_timeout: Duration::from_secs(30),
        ..peer.config(&dir)
    };
    let emitter = Emitter::start(config.clone()).expect("start");
    let ids = emit(&emitter, 20);

    // Bounded by the grace, not by the 30 s a hung request may take.
    tokio::time::timeout(
        Duration::from_secs(15),
        emitter.shutdown(Duration::from_millis(200)),
    )
    .await
    .expect("shutdown returns long before the request times out");
    assert_eq!(emitter.stats().spooled, 20);
    assert_eq!(emitter.state(), State::Closed);
    assert!(matches!(emitter.emit(event(0)), Err(EmitError::Closed)));
    assert!(matches!(emitter.flush().await, Err(EmitError::Closed)));

    peer.set_mode(Mode::Accept);
    let next = Emitter::start(config).expect("start again");
    assert_eventually!(
        WITHIN,
        async { peer.delivered().len() == ids.len() },
        "all delivered"
    );
    assert_eq!(peer.delivered(), strings(&ids));
    next.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_torn_record_at_the_end_of_a_segment_is_skipped() {
    let peer = Peer::start().await;
    let dir = TempDir::new().expect("temp dir");
    let config = peer.config(&dir);
    let whole = event(1);
    let body = pb::AppendRequest {
        events: vec![whole.clone().into()],
    }
    .encode_to_vec();
    let mut segment = (body.len() as u32).to_be_bytes().to_vec();
    segment.extend_from_slice(&body);
    segment.extend_from_slice(&(body.len() as u32).to_be_bytes());
    segment.extend_from_slice(&body[..body.len() / 2]); // a crash in the middle of a write
    std::fs::create_dir_all(&config.spool_dir).expect("spool dir");
    std::fs::write(config.spool_dir.join("00000000000000000007.seg"), segment).expect("segment");

    let emitter = Emitter::start(config.clone()).expect("start");
    assert_eventually!(
        WITHIN,
        async { segments(&config.spool_dir).is_empty() },
        "replayed"
    );
    assert_eq!(peer.delivered(), strings(&[whole.id]));
    emitter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn refuses_what_cannot_work_up_front() {
    let peer = Peer::start().await;
    let dir = TempDir::new().expect("temp dir");
    let emitter = Emitter::start(peer.config(&dir)).expect("start");
    let mut invalid = event(0);
    invalid.action = "Tool Executed".into();
    assert!(
        matches!(emitter.emit(invalid), Err(EmitError::Invalid(error)) if error.field == "action")
    );
    assert_eq!(emitter.stats().emitted, 0);

    let no_key = EmitterConfig {
        api_key_file: Some(dir.path().join("missing.key")),
        spool_dir: dir.path().join("other"),
        ..peer.config(&dir)
    };
    assert!(matches!(
        Emitter::start(no_key),
        Err(StartError::ApiKey { .. })
    ));
    let bad = EmitterConfig {
        batch_size: 0,
        ..peer.config(&dir)
    };
    assert!(matches!(Emitter::start(bad), Err(StartError::Config(_))));
    emitter.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn start_needs_a_runtime() {
    let dir = TempDir::new().expect("temp dir");
    let config = EmitterConfig {
        spool_dir: dir.path().join("spool"),
        ..EmitterConfig::default()
    };
    assert!(matches!(Emitter::start(config), Err(StartError::NoRuntime)));
}
