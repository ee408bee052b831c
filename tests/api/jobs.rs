//! The queue under failure, on both backends: a job that always fails is
//! dead-lettered after N attempts and its video says `failed`; a worker
//! process killed mid-job has its job delivered again to another, which
//! publishes one set of outputs; outside producers' ingest requests on
//! Kafka become videos and events; a broker restart loses no job.

use crate::helpers::{
    Backend, TestApp, blake3_hex, ffmpeg_to, fixture, hex_id, kafka_brokers, spawn_app_with, use_kafka,
    wait_for_transcode,
};
use crate::ingest::{Reply, origin};
use crate::restart::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vidcache::storage::{JobState, Repository};

/// A generated source of its own, so videos of one test never dedup
/// against another's. `secs` long, 640x360, a tone.
fn source(name: &str, filter: &str, secs: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.mp4"));
    ffmpeg_to(
        &path,
        &format!(
            "-f lavfi -i {filter} -f lavfi -i sine=frequency=550 -t {secs} -c:v libx264 -preset ultrafast \
             -pix_fmt yuv420p -c:a aac -movflags +faststart"
        ),
    );
    std::fs::read(path).unwrap()
}

async fn upload(app: &TestApp, name: &str, bytes: Vec<u8>) -> String {
    let result = app.upload(&format!("https://example.com/{name}-{}.mp4", hex_id()), "videos", None, bytes).await;
    assert_eq!(result["status"], "new", "{result}");
    result["hash"].as_str().unwrap().to_owned()
}

/// Every message of `topic`, from the beginning, read for `secs`.
fn kafka_messages(brokers: &str, topic: &str, secs: u64) -> Vec<serde_json::Value> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", hex_id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            out.push(serde_json::from_slice(message.payload().unwrap_or_default()).unwrap());
            // After the first, a few seconds more for any that follow.
            deadline = deadline.min(std::time::Instant::now() + Duration::from_secs(3));
        }
    }
    out
}

async fn a_job_that_always_fails_is_dead_lettered(backend: Backend, kafka: bool) {
    let brokers = kafka.then(kafka_brokers);
    let mut prefix = String::new();
    let app = spawn_app_with(backend, |s| {
        s.transcode.workers = 1;
        s.transcode.on_upload = false;
        s.transcode.max_attempts = 2;
        s.transcode.retry_delay_secs = 0;
        if let Some(brokers) = &brokers {
            prefix = use_kafka(s, brokers);
        }
    })
    .await;
    let hash = upload(&app, "doomed", fixture("small")).await;
    assert_eq!(app.get_json(&format!("/meta/{hash}")).await["transcode"]["status"], "none");
    // The stored object turns to garbage: every attempt fails to decode it.
    let object = app.objects().into_iter().next().expect("the object");
    let len = std::fs::metadata(&object).unwrap().len() as usize;
    std::fs::write(&object, vec![0x5a; len]).unwrap();

    let queued = app.client.post(app.url(&format!("/video/{hash}/transcode"))).send().await.unwrap();
    assert_eq!(queued.status(), 202);
    let meta = wait_for_transcode(&app, &hash, "failed", 120).await;
    let error = meta["transcode"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot be decoded"), "the last error is kept: {meta}");

    if let Some(brokers) = &brokers {
        let dead = kafka_messages(brokers, &format!("{prefix}transcode.dlq"), 30);
        assert_eq!(dead.len(), 1, "one dead letter");
        assert_eq!(dead[0]["hash"], hash.as_str());
        assert_eq!(dead[0]["attempt"], 2);
        assert!(dead[0]["last_error"].as_str().unwrap().contains("cannot be decoded"));
    } else {
        let repo = Repository::connect(&app.database_url, 1).await.unwrap();
        let dead = repo.jobs_in("transcode.dlq", JobState::Ready, 10).await.unwrap();
        assert_eq!(dead.len(), 1, "one dead letter");
        assert_eq!(dead[0].key, hash);
        let payload: serde_json::Value = serde_json::from_str(&dead[0].payload).unwrap();
        assert_eq!(payload["attempt"], 2);
        assert!(payload["last_error"].as_str().unwrap().contains("cannot be decoded"));
        let failed = repo.jobs_in("transcode", JobState::Dead, 10).await.unwrap();
        assert_eq!(failed[0].attempts, 2);
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vidcache_transcodes_total{outcome=\"failed\"} 1"), "{metrics}");
    assert!(metrics.contains("vidcache_transcodes_total{outcome=\"attempt_failed\"} 2"), "{metrics}");

    // A failed transcode can be asked for again.
    let again = app.client.post(app.url(&format!("/video/{hash}/transcode"))).send().await.unwrap();
    assert_eq!(again.status(), 202);
}

#[actix_web::test]
async fn a_job_that_always_fails_is_dead_lettered_embedded_sqlite() {
    a_job_that_always_fails_is_dead_lettered(Backend::Sqlite, false).await
}
#[actix_web::test]
async fn a_job_that_always_fails_is_dead_lettered_embedded_postgres() {
    a_job_that_always_fails_is_dead_lettered(Backend::Postgres, false).await
}
#[actix_web::test]
async fn a_job_that_always_fails_is_dead_lettered_kafka() {
    a_job_that_always_fails_is_dead_lettered(Backend::Sqlite, true).await
}

/// A `vidcache worker` process on the app's database and storage.
struct Worker(Child);

impl Worker {
    fn start(app: &TestApp, kafka: Option<(&str, &str)>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vidcache"));
        command
            .arg("worker")
            .env_remove("VIDCACHE_CONFIG")
            .env("VIDCACHE__STORAGE__ROOT", &app.root)
            .env("VIDCACHE__DATABASE__URL", &app.database_url)
            .env("VIDCACHE__TRANSCODE__LEASE_SECS", "3")
            .env("VIDCACHE__TRANSCODE__WORKERS", "1")
            .env("VIDCACHE__LOG__FILTER", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some((brokers, prefix)) = kafka {
            command
                .env("VIDCACHE__KAFKA__BROKERS", brokers)
                .env("VIDCACHE__KAFKA__TOPIC_PREFIX", prefix)
                .env("VIDCACHE__KAFKA__GROUP_ID", format!("{prefix}workers"))
                .env("VIDCACHE__KAFKA__PROPERTIES", "session.timeout.ms=6000,heartbeat.interval.ms=1000");
        }
        Self(command.spawn().expect("the vidcache binary runs"))
    }

    fn kill9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn derived(app: &TestApp, hash: &str) -> PathBuf {
    app.root.join(".media").join(hash)
}

/// Waits until a worker has written a few segments into `work` (its job's
/// `.abr.tmp`): the job is under way.
async fn wait_until_writing(work: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !(work.join("flat").exists() && std::fs::read_dir(work.join("flat")).unwrap().count() > 3) {
        assert!(std::time::Instant::now() < deadline, "the worker never started writing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

async fn a_worker_killed_mid_job_is_replaced(backend: Backend, kafka: bool) {
    let brokers = kafka.then(kafka_brokers);
    let mut prefix = String::new();
    // The daemon only queues (and, with Kafka, relays); workers are processes.
    let app = spawn_app_with(backend, |s| {
        if let Some(brokers) = &brokers {
            prefix = use_kafka(s, brokers);
        }
    })
    .await;
    let hash = upload(&app, "long", source("long", "testsrc2=size=1280x720:rate=30", 16)).await;
    let mut first = Worker::start(&app, brokers.as_deref().map(|b| (b, prefix.as_str())));
    let work = derived(&app, &hash).join(".abr.tmp");
    wait_until_writing(&work).await;
    assert_eq!(app.get_json(&format!("/meta/{hash}")).await["transcode"]["status"], "processing");
    first.kill9();
    assert!(work.exists(), "the killed worker left its half-written outputs");

    let _second = Worker::start(&app, brokers.as_deref().map(|b| (b, prefix.as_str())));
    let meta = wait_for_transcode(&app, &hash, "ready", 300).await;
    assert_eq!(meta["transcode"]["renditions"].as_array().unwrap().len(), 3, "720p, 480p, 240p");
    assert_eq!(names_in(&derived(&app, &hash)), vec!["abr", "thumbnail.jpg"], "one set of outputs, no leftovers");
    let probe = crate::transcode::ffprobe_json(&app.url(&format!("/media/{hash}/hls/master.m3u8")), "format=duration");
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 16.0).abs() < 0.5, "{duration}");
    if !kafka {
        let repo = Repository::connect(&app.database_url, 1).await.unwrap();
        let done = repo.jobs_in("transcode", JobState::Done, 10).await.unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].attempts, 2, "delivered again after the lease ran out");
    }
}

#[actix_web::test]
async fn a_worker_killed_mid_job_is_replaced_embedded_sqlite() {
    a_worker_killed_mid_job_is_replaced(Backend::Sqlite, false).await
}
#[actix_web::test]
async fn a_worker_killed_mid_job_is_replaced_embedded_postgres() {
    a_worker_killed_mid_job_is_replaced(Backend::Postgres, false).await
}
#[actix_web::test]
async fn a_worker_killed_mid_job_is_replaced_kafka() {
    a_worker_killed_mid_job_is_replaced(Backend::Sqlite, true).await
}

/// Asked to stop (SIGTERM) in the middle of a job, a worker takes no new
/// job, finishes the one it holds (outputs published, row or offset
/// recorded) and then exits cleanly: the job is not run a second time.
async fn a_worker_asked_to_stop_finishes_its_job_first(kafka: bool) {
    let brokers = kafka.then(kafka_brokers);
    let mut prefix = String::new();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        if let Some(brokers) = &brokers {
            prefix = use_kafka(s, brokers);
        }
    })
    .await;
    let hash = upload(&app, "drained", source("drained", "testsrc2=size=1280x720:rate=30", 12)).await;
    let mut worker = Worker::start(&app, brokers.as_deref().map(|b| (b, prefix.as_str())));
    wait_until_writing(&derived(&app, &hash).join(".abr.tmp")).await;
    assert_eq!(app.get_json(&format!("/meta/{hash}")).await["transcode"]["status"], "processing");
    // SAFETY: kill(2) on the pid of a child this test owns and has not reaped.
    assert_eq!(unsafe { libc::kill(worker.0.id() as i32, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the worker did not stop after its job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "a clean exit: {status:?}");
    // Done by the worker that was asked to stop: no other worker runs.
    let meta = app.get_json(&format!("/meta/{hash}")).await;
    assert_eq!(meta["transcode"]["status"], "ready", "{meta}");
    assert_eq!(names_in(&derived(&app, &hash)), vec!["abr", "thumbnail.jpg"], "one set of outputs, no leftovers");
    if !kafka {
        let repo = Repository::connect(&app.database_url, 1).await.unwrap();
        let done = repo.jobs_in("transcode", JobState::Done, 10).await.unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].attempts, 1, "run once, not delivered again");
    }
}

#[actix_web::test]
async fn a_worker_asked_to_stop_finishes_its_job_first_embedded() {
    a_worker_asked_to_stop_finishes_its_job_first(false).await
}
#[actix_web::test]
async fn a_worker_asked_to_stop_finishes_its_job_first_kafka() {
    a_worker_asked_to_stop_finishes_its_job_first(true).await
}

fn python_client(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/client.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "client.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[actix_web::test]
async fn an_ingest_request_on_kafka_yields_a_video_and_an_event() {
    let brokers = kafka_brokers();
    let mut prefix = String::new();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        prefix = use_kafka(s, &brokers);
        s.ingest.allow_private_networks = true;
    })
    .await;
    // `GET /events` is fed from the events topic in Kafka mode.
    let mut sse = crate::transcode::listen(&app).await;
    let bytes = source("ingested", "mandelbrot=size=320x240:rate=25", 2);
    let port = origin("127.0.0.1", vec![("/clip.mp4", Reply::Body(bytes.clone()))]);
    let (ok_id, bad_id) = (format!("req-{}", hex_id()), format!("req-{}", hex_id()));
    let ingest = format!("{prefix}ingest");
    let events = format!("{prefix}events");
    let request = serde_json::json!({
        "type": "ingest", "version": 1, "url": format!("http://127.0.0.1:{port}/clip.mp4"),
        "bucket": "videos", "prefix": "from-kafka", "meta": {"source": "test"}, "request_id": ok_id,
    });
    let producer = {
        let (b, t, k, v) = (brokers.clone(), ingest.clone(), ok_id.clone(), request.to_string());
        tokio::task::spawn_blocking(move || python_client(&["produce", &b, &t, &k, &v]))
    };
    producer.await.unwrap();
    let bad = serde_json::json!({"type": "ingest", "url": "ftp://example.com/x.mp4", "bucket": "videos", "request_id": bad_id});
    let (b, t) = (brokers.clone(), ingest.clone());
    tokio::task::spawn_blocking(move || python_client(&["produce", &b, &t, "bad", &bad.to_string()])).await.unwrap();

    let (b, t, m) = (brokers.clone(), events.clone(), format!("request_id={ok_id}"));
    let line =
        tokio::task::spawn_blocking(move || python_client(&["consume", &b, &t, &m, "--timeout", "90"])).await.unwrap();
    let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(event["type"], "upload.completed");
    assert_eq!(event["version"], 1);
    assert_eq!(event["hash"], blake3_hex(&bytes));
    let meta = app.get_json(&format!("/meta/{}", blake3_hex(&bytes))).await;
    assert_eq!(meta["prefix"], "from-kafka");
    let streamed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = sse.recv().await {
            if event["request_id"] == ok_id.as_str() {
                return event;
            }
        }
        panic!("the event stream ended");
    })
    .await
    .expect("the Kafka event reached GET /events");
    assert_eq!(streamed["type"], "upload.completed");
    assert_eq!(meta["meta"]["source"], "test");

    let (b, t, m) = (brokers.clone(), events.clone(), format!("request_id={bad_id}"));
    let line =
        tokio::task::spawn_blocking(move || python_client(&["consume", &b, &t, &m, "--timeout", "60"])).await.unwrap();
    let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(event["type"], "ingest.failed");
    assert_eq!(event["code"], "invalid-url");
}

/// A broker of the test's own, so it can be restarted (SQLite storage:
/// topics, messages and offsets survive).
struct Broker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Broker {
    /// A broker not started yet: its address answers nothing.
    fn stopped() -> Self {
        Self { child: None, dir: tempfile::tempdir().unwrap(), port: free_port() }
    }

    async fn start() -> Self {
        let mut broker = Self::stopped();
        broker.spawn().await;
        broker
    }

    async fn spawn(&mut self) {
        std::fs::create_dir_all(self.dir.path().join("data")).unwrap();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://data/tansu.db"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed (make test installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tansu did not listen on {}", self.port);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[actix_web::test]
async fn a_broker_restart_loses_no_job() {
    let mut broker = Broker::start().await;
    let app = spawn_app_with(Backend::Sqlite, |s| {
        use_kafka(s, &broker.address());
        s.transcode.workers = 1;
    })
    .await;
    let first = upload(&app, "a", source("a", "testsrc2=size=1280x720:rate=30", 10)).await;
    // Down while a job runs (or, on a fast day, just after it) and while
    // the next ones are uploaded.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = app.get_json(&format!("/meta/{first}")).await["transcode"]["status"].clone();
        if status == "processing" || status == "ready" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the first job never started: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.kill9();
    let second = upload(&app, "b", source("b", "mandelbrot=size=320x240:rate=25", 3)).await;
    let third = upload(&app, "c", source("c", "life=size=320x240:rate=25:mold=10:seed=7", 3)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.spawn().await;
    for hash in [&first, &second, &third] {
        wait_for_transcode(&app, hash, "ready", 300).await;
    }
}

#[actix_web::test]
async fn the_daemon_starts_before_its_broker_and_catches_up() {
    let mut broker = Broker::stopped();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut settings = vidcache::config::Settings::defaults_only().unwrap();
    settings.server.bind = "127.0.0.1:0".into();
    settings.storage.root = root.clone();
    settings.database.url = vidcache::config::Settings::sqlite_url_under(dir.path());
    settings.transcode.workers = 1;
    settings.transcode.preset = "ultrafast".into();
    use_kafka(&mut settings, &broker.address());
    let app = vidcache::startup::Application::build(settings).await.expect("starts without a broker");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    let app = TestApp::external(&address, &root);

    let readyz = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503, "not ready while the broker is away");
    let body: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(body["code"], "not-ready");
    assert!(body["message"].as_str().unwrap().contains("queue"), "{body}");
    // Uploads are taken meanwhile; their jobs wait in the outbox.
    let hash = upload(&app, "early", source("early", "testsrc2=size=320x240:rate=25", 2)).await;
    assert_eq!(app.get_json(&format!("/meta/{hash}")).await["transcode"]["status"], "queued");

    broker.spawn().await;
    app.wait_ready(60).await;
    wait_for_transcode(&app, &hash, "ready", 120).await;
}
