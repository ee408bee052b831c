//! The embedded durable queue's storage (issue 5 groundwork): at-least-once
//! delivery on the database alone. A job is leased to one worker for a
//! while; a worker that dies lets the lease run out and the job is leased
//! again. Each lease counts an attempt; a job that fails `max_attempts`
//! times is dead, with its last error, for the dead-letter view.

use super::entities::job;
use super::repo::{RepoError, Repository};
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Ready,
    Leased,
    Done,
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Leased => "leased",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

/// A job leased to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub topic: String,
    pub key: String,
    pub payload: serde_json::Value,
    /// Leases so far, this one included.
    pub attempts: u32,
}

impl Repository {
    /// Queues `payload` on `topic` under `key` (one job per key: queuing a
    /// key again makes a finished or dead job ready again, and leaves a
    /// waiting or leased one as it is). Answers the job's id.
    pub async fn enqueue_job(&self, topic: &str, key: &str, payload: &serde_json::Value) -> Result<i64, RepoError> {
        Self::enqueue_job_in(self.conn(), topic, key, payload).await
    }

    /// `enqueue_job` inside a caller's transaction.
    pub(super) async fn enqueue_job_in(
        db: &impl ConnectionTrait,
        topic: &str,
        key: &str,
        payload: &serde_json::Value,
    ) -> Result<i64, RepoError> {
        let now = Utc::now();
        let row = job::ActiveModel {
            topic: Set(topic.to_owned()),
            key: Set(key.to_owned()),
            payload: Set(payload.to_string()),
            state: Set(JobState::Ready.as_str().to_owned()),
            attempts: Set(0),
            available_at: Set(now),
            leased_by: Set(None),
            last_error: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        };
        job::Entity::insert(row)
            .on_conflict(OnConflict::columns([job::Column::Topic, job::Column::Key]).do_nothing().to_owned())
            .exec_without_returning(db)
            .await?;
        // Queued before and finished (or dead): run it again.
        job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value(JobState::Ready.as_str()))
            .col_expr(job::Column::Attempts, Expr::value(0))
            .col_expr(job::Column::Payload, Expr::value(payload.to_string()))
            .col_expr(job::Column::AvailableAt, Expr::value(now))
            .col_expr(job::Column::UpdatedAt, Expr::value(now))
            .filter(job::Column::Topic.eq(topic))
            .filter(job::Column::Key.eq(key))
            .filter(job::Column::State.is_in([JobState::Done.as_str(), JobState::Dead.as_str()]))
            .exec(db)
            .await?;
        let row = job::Entity::find()
            .filter(job::Column::Topic.eq(topic))
            .filter(job::Column::Key.eq(key))
            .one(db)
            .await?
            .ok_or_else(|| RepoError::from(sea_orm::DbErr::RecordNotFound("a queued job".into())))?;
        Ok(row.id)
    }

    /// Leases the oldest job of `topic` that is ready, or whose lease ran
    /// out, to `worker` for `lease`. Two workers never hold the same job:
    /// the lease is taken by a conditional update that only one can win.
    pub async fn lease_job(&self, topic: &str, worker: &str, lease: Duration) -> Result<Option<Job>, RepoError> {
        for _ in 0..8 {
            let now = Utc::now();
            let due = Condition::any()
                .add(job::Column::State.eq(JobState::Ready.as_str()))
                .add(job::Column::State.eq(JobState::Leased.as_str()));
            let Some(candidate) = job::Entity::find()
                .filter(job::Column::Topic.eq(topic))
                .filter(due.clone())
                .filter(job::Column::AvailableAt.lte(now))
                .order_by_asc(job::Column::AvailableAt)
                .order_by_asc(job::Column::Id)
                .limit(1)
                .one(self.conn())
                .await?
            else {
                return Ok(None);
            };
            let taken = job::Entity::update_many()
                .col_expr(job::Column::State, Expr::value(JobState::Leased.as_str()))
                .col_expr(job::Column::Attempts, Expr::value(candidate.attempts + 1))
                .col_expr(job::Column::AvailableAt, Expr::value(now + lease))
                .col_expr(job::Column::LeasedBy, Expr::value(worker))
                .col_expr(job::Column::UpdatedAt, Expr::value(now))
                .filter(job::Column::Id.eq(candidate.id))
                .filter(job::Column::State.eq(candidate.state.clone()))
                .filter(job::Column::Attempts.eq(candidate.attempts))
                .exec(self.conn())
                .await?;
            if taken.rows_affected == 1 {
                return Ok(Some(Job {
                    id: candidate.id,
                    topic: candidate.topic,
                    key: candidate.key,
                    payload: serde_json::from_str(&candidate.payload).unwrap_or(serde_json::Value::Null),
                    attempts: (candidate.attempts + 1) as u32,
                }));
            }
            // Another worker won this one: look again.
        }
        Ok(None)
    }

    /// Keeps `job` leased to `worker` for another `lease` (a long job's
    /// heartbeat). `false` if the lease was lost: it ran out and another
    /// worker took the job.
    pub async fn extend_lease(&self, job: &Job, worker: &str, lease: Duration) -> Result<bool, RepoError> {
        let now = Utc::now();
        let updated = job::Entity::update_many()
            .col_expr(job::Column::AvailableAt, Expr::value(now + lease))
            .col_expr(job::Column::UpdatedAt, Expr::value(now))
            .filter(job::Column::Id.eq(job.id))
            .filter(job::Column::State.eq(JobState::Leased.as_str()))
            .filter(job::Column::LeasedBy.eq(worker))
            .filter(job::Column::Attempts.eq(job.attempts as i32))
            .exec(self.conn())
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Jobs of `topic` in `state`, oldest first (the dead-letter view).
    pub async fn jobs_in(&self, topic: &str, state: JobState, limit: u64) -> Result<Vec<job::Model>, RepoError> {
        Ok(job::Entity::find()
            .filter(job::Column::Topic.eq(topic))
            .filter(job::Column::State.eq(state.as_str()))
            .order_by_asc(job::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await?)
    }

    /// The job's outputs are durable: it is done.
    pub async fn ack_job(&self, id: i64) -> Result<(), RepoError> {
        self.set_job(id, JobState::Done, Utc::now(), None).await
    }

    /// The attempt failed: the job is ready again after `retry_after`, or
    /// dead once it has had `max_attempts`.
    pub async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        max_attempts: u32,
        retry_after: Duration,
    ) -> Result<JobState, RepoError> {
        let state = if job.attempts >= max_attempts { JobState::Dead } else { JobState::Ready };
        self.set_job(job.id, state, Utc::now() + retry_after, Some(error)).await?;
        Ok(state)
    }

    async fn set_job(
        &self,
        id: i64,
        state: JobState,
        available_at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<(), RepoError> {
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value(state.as_str()))
            .col_expr(job::Column::AvailableAt, Expr::value(available_at))
            .col_expr(job::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(job::Column::Id.eq(id));
        if let Some(error) = error {
            update = update.col_expr(job::Column::LastError, Expr::value(error));
        }
        update.exec(self.conn()).await?;
        Ok(())
    }

    /// Deletes the finished (done) jobs last touched before `before`, and
    /// answers how many. Dead jobs and dead letters stay for inspection.
    pub async fn purge_done_jobs(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let deleted = job::Entity::delete_many()
            .filter(job::Column::State.eq(JobState::Done.as_str()))
            .filter(job::Column::UpdatedAt.lt(before))
            .exec(self.conn())
            .await?;
        Ok(deleted.rows_affected)
    }

    /// A job as stored, by id (state, attempts, last error).
    pub async fn find_job(&self, id: i64) -> Result<Option<job::Model>, RepoError> {
        Ok(job::Entity::find_by_id(id).one(self.conn()).await?)
    }
}
