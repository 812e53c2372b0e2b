//! Scopes carried by async tasks (feature `async`): on a multi-threaded runtime, with tasks
//! moving between worker threads at their `.await`s, a task's pin, mode, token and writes
//! follow it and reach no other task. The PostgreSQL tests use the sync routed connection
//! inside the tasks (what reads the scope state is the same for the async connection), on a
//! primary and a paused streaming replica, with reads counted on the servers.
#![cfg(feature = "async")]

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel_sharding::{
    pin, task, Cluster, Consistency, ConsistencyToken, DataConsistency, RouteReason, Settings,
};
use support::pg_cluster::{Node, PgCluster};

const DB: &str = "app";
const COUNT_NAMED: &str = "SELECT COUNT(*) FROM \"users\" WHERE (\"users\".\"name\" = $1)";

mod schema {
    diesel::table! {
        users (id) {
            id -> Int8,
            name -> Text,
        }
    }
}
use schema::users;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Awaits that let the runtime move the task: yields and short sleeps; the threads the task
/// ran on are recorded in `seen`.
async fn hop(seen: &Mutex<HashSet<ThreadId>>) {
    for i in 0..20 {
        seen.lock().unwrap().insert(std::thread::current().id());
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    seen.lock().unwrap().insert(std::thread::current().id());
}

#[test]
fn a_tasks_pin_and_mode_follow_it_across_threads_and_reach_no_other_task() {
    let rt = runtime();
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let leaks = Arc::new(Mutex::new(0usize));
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..200 {
            let (threads, leaks) = (threads.clone(), leaks.clone());
            handles.push(tokio::spawn(task::scope(async move {
                let pinned = i % 2 == 0;
                if pinned {
                    pin::pin_this_thread(); // this task's state
                }
                let mine = Mutex::new(HashSet::new());
                hop(&mine).await;
                let still = pin::this_thread_is_pinned();
                if still != pinned {
                    *leaks.lock().unwrap() += 1;
                }
                let mine = mine.into_inner().unwrap();
                threads.lock().unwrap().extend(mine.iter().copied());
                mine.len()
            })));
        }
        let mut moved = 0;
        for h in handles {
            if h.await.unwrap() > 1 {
                moved += 1;
            }
        }
        assert!(
            moved > 0,
            "no task moved between threads: the test proves nothing"
        );
    });
    assert_eq!(
        *leaks.lock().unwrap(),
        0,
        "a task saw another task's pin, or lost its own"
    );
    assert!(threads.lock().unwrap().len() > 1);
    assert!(
        !pin::this_thread_is_pinned(),
        "the test thread was never pinned"
    );
}

#[test]
fn scopes_of_futures_polled_in_turn_on_one_task_never_mix() {
    let rt = runtime();
    rt.block_on(task::scope(async {
        let seen = Mutex::new(HashSet::new());
        let pinned = pin::use_primary_async(async {
            let mut all = true;
            for _ in 0..10 {
                all &= pin::this_thread_is_pinned();
                tokio::task::yield_now().await;
            }
            all
        });
        let free = async {
            let mut none = true;
            for _ in 0..10 {
                none &= !pin::this_thread_is_pinned();
                tokio::task::yield_now().await;
            }
            hop(&seen).await;
            none
        };
        let (pinned, free) = tokio::join!(pinned, free);
        assert!(pinned, "use_primary_async lost its pin at an await");
        assert!(
            free,
            "a future polled next to use_primary_async saw its pin"
        );
        assert!(!pin::this_thread_is_pinned(), "the pin outlived its future");
    }));
}

struct Setup {
    pg: PgCluster,
    cluster: Cluster<PgConnection>,
}

/// A primary and one replica whose replay is paused (stale for certain), `settings` first.
fn setup(settings: &str) -> Setup {
    let pg = PgCluster::start(1);
    pg.create_database(DB);
    pg.execute(
        Node::Primary,
        DB,
        "CREATE TABLE users (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL)",
    );
    pg.wait_all_caught_up();
    pg.pause_replay(0);
    let cluster = Cluster::new(
        Settings::from_toml_str(&format!(
            "{settings}\n[databases.default]\nurl = \"{}\"\npool_size = 8\n\
             [databases.replica]\nurl = \"{}\"\nprimary = \"default\"\n",
            pg.primary_url(DB),
            pg.replica_url(0, DB),
        ))
        .unwrap(),
    )
    .unwrap();
    drop(cluster.get("default").unwrap());
    pg.reset_all_statement_stats();
    Setup { pg, cluster }
}

fn add_user(cluster: &Cluster<PgConnection>, name: &str) {
    let mut conn = cluster.get("default").unwrap();
    diesel::insert_into(users::table)
        .values(users::name.eq(name))
        .execute(&mut conn)
        .unwrap();
}

fn count(cluster: &Cluster<PgConnection>, name: &str) -> (i64, RouteReason) {
    let mut conn = cluster.get("default").unwrap();
    let n = users::table
        .filter(users::name.eq(name))
        .count()
        .get_result(&mut conn)
        .unwrap();
    (n, conn.last_route().unwrap().reason)
}

#[test]
fn a_task_reads_its_own_write_after_moving_threads_and_other_tasks_read_the_replica() {
    let s = setup("[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"");
    let rt = runtime();
    let cluster = s.cluster.clone();
    let (writers, readers) = rt.block_on(async move {
        let mut writers = Vec::new();
        for i in 0..8 {
            let cluster = cluster.clone();
            writers.push(tokio::spawn(task::scope(async move {
                let name = format!("w{i}");
                add_user(&cluster, &name);
                let seen = Mutex::new(HashSet::new());
                hop(&seen).await;
                let got = count(&cluster, &name);
                (got, seen.into_inner().unwrap().len())
            })));
        }
        let mut readers = Vec::new();
        for i in 0..32 {
            let cluster = cluster.clone();
            readers.push(tokio::spawn(task::scope(async move {
                tokio::task::yield_now().await;
                count(&cluster, &format!("w{}", i % 8))
            })));
        }
        let mut w = Vec::new();
        for h in writers {
            w.push(h.await.unwrap());
        }
        let mut r = Vec::new();
        for h in readers {
            r.push(h.await.unwrap());
        }
        (w, r)
    });
    for ((n, reason), _) in &writers {
        assert_eq!(
            (*n, *reason),
            (1, RouteReason::Behind),
            "a writer lost its write"
        );
    }
    assert!(
        writers.iter().any(|(_, threads)| *threads > 1),
        "no writer moved between threads: the test proves nothing"
    );
    for (n, reason) in &readers {
        assert_eq!(
            (*n, *reason),
            (0, RouteReason::Replica),
            "a reader task inherited another task's write"
        );
    }
    // on the servers: the writers' reads on the primary, the readers' on the replica
    assert_eq!(s.pg.statement_calls(Node::Primary, COUNT_NAMED), 8);
    assert_eq!(s.pg.statement_calls(Node::Replica(0), COUNT_NAMED), 32);
}

#[test]
fn a_spawned_task_carries_its_spawners_writes_only_when_spawned_with_the_scope() {
    let s = setup("[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"");
    let rt = runtime();
    let cluster = s.cluster.clone();
    let (carried, bare, after) = rt.block_on(task::scope(async move {
        add_user(&cluster, "ada");
        let c = cluster.clone();
        let carried = task::spawn(async move {
            tokio::task::yield_now().await;
            let got = count(&c, "ada");
            add_user(&c, "child"); // stays with the child
            got
        })
        .await
        .unwrap();
        let c = cluster.clone();
        let bare = tokio::spawn(async move { count(&c, "ada") }).await.unwrap();
        // the spawner did not learn of the child's write
        let after = count(&cluster, "child");
        (carried, bare, after)
    }));
    assert_eq!(carried, (1, RouteReason::Behind));
    assert_eq!(
        bare,
        (0, RouteReason::Replica),
        "documented: a plain spawn carries nothing"
    );
    assert_eq!(
        after.1,
        RouteReason::Behind,
        "its own write to the same database still holds the spawner's reads"
    );
    assert_eq!(after.0, 1, "read on the primary, which has the child's row");
}

#[test]
fn with_token_async_and_jobs_follow_the_future_across_threads() {
    let s = setup("[consistency]\nmode = \"read_your_writes\"\nmonitor_interval = \"50ms\"");
    add_user(&s.cluster, "ada");
    let token = s.cluster.token().to_string();
    let rt = runtime();
    let cluster = s.cluster.clone();
    let results = rt.block_on(async move {
        let token: ConsistencyToken = token.parse().unwrap();
        let mut handles = Vec::new();
        for i in 0..16 {
            let cluster = cluster.clone();
            let token = token.clone();
            handles.push(tokio::spawn(async move {
                let seen = Mutex::new(HashSet::new());
                if i % 2 == 0 {
                    let c = cluster.clone();
                    cluster
                        .with_token_async(&token, async move {
                            hop(&seen).await;
                            count(&c, "ada")
                        })
                        .await
                } else {
                    // no token: this task never wrote, so the stale replica serves it
                    hop(&seen).await;
                    count(&cluster, "ada")
                }
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        // a job with the token: sticky reads on the primary; delayed: not run yet
        let c = cluster.clone();
        let job = cluster
            .run_job_async(&token, DataConsistency::Sticky, async move {
                tokio::task::yield_now().await;
                count(&c, "ada")
            })
            .await
            .unwrap();
        let delayed = cluster
            .run_job_async(
                &token,
                DataConsistency::Delayed(Duration::from_millis(100)),
                async { unreachable!("a delayed job ran before any replica had its token") },
            )
            .await;
        // a mode scope follows the future too
        let c = cluster.clone();
        let strong = cluster
            .with_consistency_async(Consistency::Strong, async move {
                tokio::task::yield_now().await;
                count(&c, "ada")
            })
            .await;
        (out, job, delayed.is_err(), strong)
    });
    let (out, job, delayed, strong) = results;
    for (i, got) in out.iter().enumerate() {
        let expect = if i % 2 == 0 {
            (1, RouteReason::Behind)
        } else {
            (0, RouteReason::Replica)
        };
        assert_eq!(*got, expect, "task {i}");
    }
    assert_eq!(job, (1, RouteReason::Behind));
    assert!(delayed, "the delayed job was not delayed");
    assert_eq!(strong, (1, RouteReason::Behind));
    s.pg.resume_replay(0);
}
