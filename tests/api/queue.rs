//! The embedded durable queue's storage (issue 5 groundwork), on SQLite and
//! PostgreSQL: one lease per job at a time, redelivery when a lease runs
//! out, dead after too many attempts with the last error, one job per key.

use crate::both_backends;
use crate::helpers::{Backend, fresh_database};
use chrono::Duration;
use serde_json::json;
use vidcache::storage::{JobState, Repository};

async fn repo(backend: Backend) -> (Repository, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    (Repository::connect(&url, 5).await.unwrap(), dir)
}

async fn a_job_is_leased_once_redelivered_after_its_lease_and_dead_after_its_attempts(backend: Backend) {
    let (repo, _dir) = repo(backend).await;
    let id = repo.enqueue_job("transcode", "h1", &json!({"hash": "h1"})).await.unwrap();
    assert_eq!(repo.enqueue_job("transcode", "h1", &json!({"hash": "h1"})).await.unwrap(), id, "one job per key");
    assert!(repo.lease_job("other", "w1", Duration::seconds(30)).await.unwrap().is_none(), "topics are apart");

    let job = repo.lease_job("transcode", "w1", Duration::seconds(30)).await.unwrap().expect("a job");
    assert_eq!((job.id, job.attempts, job.payload.clone()), (id, 1, json!({"hash": "h1"})));
    assert!(repo.lease_job("transcode", "w2", Duration::seconds(30)).await.unwrap().is_none(), "leased to w1");

    // A worker that dies holding a job: once its lease runs out, another gets it.
    let id2 = repo.enqueue_job("transcode", "h2", &json!({"hash": "h2"})).await.unwrap();
    let job2 = repo.lease_job("transcode", "w1", Duration::milliseconds(200)).await.unwrap().expect("h2");
    assert_eq!(job2.id, id2);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let again = repo.lease_job("transcode", "w2", Duration::seconds(30)).await.unwrap().expect("redelivered");
    assert_eq!((again.id, again.attempts), (id2, 2));
    repo.ack_job(again.id).await.unwrap();
    assert_eq!(repo.find_job(id2).await.unwrap().unwrap().state, "done");

    // A job that always fails is dead after 3 attempts, with its last error.
    // Its first attempt is w1's lease from the start.
    assert_eq!(repo.fail_job(&job, "boom 1", 3, Duration::milliseconds(10)).await.unwrap(), JobState::Ready);
    for attempt in 2..=3u32 {
        let job = loop {
            if let Some(job) = repo.lease_job("transcode", "w1", Duration::seconds(30)).await.unwrap() {
                break job;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!((job.id, job.attempts), (id, attempt));
        let state = repo.fail_job(&job, &format!("boom {attempt}"), 3, Duration::milliseconds(10)).await.unwrap();
        assert_eq!(state, if attempt < 3 { JobState::Ready } else { JobState::Dead });
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(repo.lease_job("transcode", "w1", Duration::seconds(30)).await.unwrap().is_none(), "dead jobs stay dead");
    let dead = repo.find_job(id).await.unwrap().unwrap();
    assert_eq!((dead.state.as_str(), dead.last_error.as_deref()), ("dead", Some("boom 3")));
    // Queued again (POST /video/{hash}/transcode), it runs again from scratch.
    assert_eq!(repo.enqueue_job("transcode", "h1", &json!({"hash": "h1"})).await.unwrap(), id);
    let rerun = repo.lease_job("transcode", "w1", Duration::seconds(30)).await.unwrap().expect("ready again");
    assert_eq!((rerun.id, rerun.attempts), (id, 1));
}
both_backends!(a_job_is_leased_once_redelivered_after_its_lease_and_dead_after_its_attempts);

async fn concurrent_workers_never_share_a_job(backend: Backend) {
    let (repo, _dir) = repo(backend).await;
    for i in 0..40 {
        repo.enqueue_job("transcode", &format!("k{i}"), &json!(i)).await.unwrap();
    }
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(job) =
                    repo.lease_job("transcode", &format!("w{w}"), Duration::seconds(60)).await.unwrap()
                {
                    got.push(job.id);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "a job went to two workers");
    assert_eq!(n, 40, "every job was leased");
}
both_backends!(concurrent_workers_never_share_a_job);

async fn a_renewed_lease_holds_a_long_job_and_finished_jobs_are_purged(backend: Backend) {
    let (repo, _dir) = repo(backend).await;
    let id = repo.enqueue_job("transcode", "long", &json!({"hash": "long"})).await.unwrap();
    let job = repo.lease_job("transcode", "w1", Duration::milliseconds(1500)).await.unwrap().expect("a job");
    // Renewed before it runs out, the lease keeps others away past its first term.
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert!(repo.extend_lease(&job, "w1", Duration::milliseconds(1500)).await.unwrap());
        assert!(repo.lease_job("transcode", "w2", Duration::seconds(30)).await.unwrap().is_none(), "still w1's");
    }
    // Not renewed, it runs out; the first worker's renewal then fails.
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let taken = repo.lease_job("transcode", "w2", Duration::seconds(30)).await.unwrap().expect("redelivered");
    assert_eq!((taken.id, taken.attempts), (id, 2));
    assert!(!repo.extend_lease(&job, "w1", Duration::seconds(30)).await.unwrap(), "w1 lost the lease");

    repo.ack_job(taken.id).await.unwrap();
    let waiting = repo.enqueue_job("transcode", "waiting", &json!({})).await.unwrap();
    assert_eq!(repo.purge_done_jobs(chrono::Utc::now() - Duration::hours(1)).await.unwrap(), 0, "too recent");
    assert_eq!(repo.purge_done_jobs(chrono::Utc::now() + Duration::seconds(1)).await.unwrap(), 1);
    assert!(repo.find_job(id).await.unwrap().is_none(), "the done job is gone");
    assert_eq!(repo.find_job(waiting).await.unwrap().unwrap().state, "ready", "waiting jobs stay");
}
both_backends!(a_renewed_lease_holds_a_long_job_and_finished_jobs_are_purged);
