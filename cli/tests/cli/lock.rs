//! One writer at a time: `up` and `down` take the stack's lock (an object in
//! the stack's bucket, written with S3's conditional writes); another run
//! waits for it or fails naming its holder; a lock whose lease ran out is
//! taken over; `chatctl unlock` removes one.

use serde_json::{Value, json};

use crate::harness::{Env, stack_bucket};

/// The stack's bucket (made by the first `up`), found by its name's prefix.
async fn find_bucket(s3: &aws_sdk_s3::Client) -> Option<String> {
    let buckets = s3.list_buckets().send().await.unwrap();
    buckets
        .buckets()
        .iter()
        .filter_map(|b| b.name())
        .find(|name| name.starts_with("chatctl-chat-"))
        .map(str::to_string)
}

/// Writes a lock of another run, of lease `lease_ms`, whose lease ends
/// `ends_in_ms` from now.
async fn lock_held_by_another(s3: &aws_sdk_s3::Client, bucket: &str, ends_in_ms: i64, lease_ms: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let holder = json!({
        "command": "up", "user": "bob", "host": "ci-runner", "pid": 7,
        "ci_run": "https://github.com/acme/chat/actions/runs/9",
        "since_ms": now - 5_000, "expires_ms": now + ends_in_ms, "lease_ms": lease_ms,
    });
    s3.put_object()
        .bucket(bucket)
        .key("chatctl.lock")
        .body(holder.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
}

async fn locked(s3: &aws_sdk_s3::Client, bucket: &str) -> bool {
    s3.head_object().bucket(bucket).key("chatctl.lock").send().await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_stops_up_and_down_naming_its_holder_and_unlock_removes_it() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let s3 = env.s3();
    let bucket = find_bucket(&s3).await.expect("up made the stack's bucket");
    assert!(!locked(&s3, &bucket).await, "up released its lock");
    let tags = s3.get_bucket_tagging().bucket(&bucket).send().await.unwrap();
    assert!(
        tags.tag_set()
            .iter()
            .any(|t| t.key() == "chatctl:stack" && t.value() == "chat"),
        "{tags:?}"
    );
    let public = s3.get_public_access_block().bucket(&bucket).send().await.unwrap();
    assert_eq!(
        public
            .public_access_block_configuration()
            .and_then(|c| c.block_public_acls()),
        Some(true)
    );

    lock_held_by_another(&s3, &bucket, 60_000, 60_000).await;
    // An `up` that changes nothing takes no lock; one that changes something does.
    env.up(&["--lock-timeout", "0"]).await.assert_ok();
    env.change_code();
    let before = env.mutating_calls().len();
    for args in [&["--lock-timeout", "0"][..], &["--lock-timeout", "0", "--yes"][..]] {
        let up = env.up(args).await;
        assert_eq!(up.code, 1, "{up:?}");
        assert!(
            up.stderr.contains(
                "stack chat is locked by `chatctl up` by bob on ci-runner (pid 7, CI run \
                 https://github.com/acme/chat/actions/runs/9) since"
            ) && up.stderr.contains("`chatctl unlock` removes it now"),
            "{up:?}"
        );
    }
    let down = env.chatctl(&["down", "--yes", "--lock-timeout", "0"]).await;
    assert_eq!(down.code, 1, "{down:?}");
    assert!(down.stderr.contains("stack chat is locked by"), "{down:?}");
    assert_eq!(env.mutating_calls().len(), before, "nothing changed while locked");
    // Reading needs no lock.
    let plan = env.up(&["--dry-run"]).await;
    plan.assert_ok();
    assert!(plan.stdout.contains("~ function chat-connect"), "{plan:?}");
    env.chatctl(&["status"]).await;

    // Bad input is refused before anything.
    let bad = env.up(&["--lock-timeout", "soon"]).await;
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("invalid --lock-timeout \"soon\""), "{bad:?}");
    let mut up_args = env.up_args();
    up_args.extend(["--lock-timeout".to_string(), "0".to_string()]);
    let up_args: Vec<&str> = up_args.iter().map(String::as_str).collect();
    let bad = env.chatctl_env(&up_args, &[("CHATCTL_LOCK_LEASE", "1s")]).await;
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("invalid CHATCTL_LOCK_LEASE \"1s\""), "{bad:?}");

    let unlock = env.chatctl(&["unlock", "--yes"]).await;
    unlock.assert_ok();
    assert!(
        unlock
            .stdout
            .contains("Stack chat is locked by `chatctl up` by bob on ci-runner")
            && unlock.stdout.contains("Lock removed."),
        "{unlock:?}"
    );
    assert!(!locked(&s3, &bucket).await);
    let again = env.chatctl(&["unlock", "--yes"]).await;
    again.assert_ok();
    assert!(again.stdout.contains("Stack chat is not locked."), "{again:?}");
    env.up(&["--lock-timeout", "0"]).await.assert_ok();

    // `down` deletes the bucket, lock and all.
    env.chatctl(&["down", "--yes"]).await.assert_ok();
    assert_eq!(find_bucket(&s3).await, None);
    // Up again at once: S3 releases a deleted bucket's name late
    // (OperationAborted meanwhile); `up` waits for it.
    env.up(&[]).await.assert_ok();
    assert_eq!(find_bucket(&s3).await, Some(bucket));
}

/// The bucket's name held by another account (it is global): `up` stops
/// before any change, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_name_taken_by_another_account_stops_up_before_any_change() {
    let env = Env::start().await;
    let bucket = stack_bucket();
    env.proxy.take_bucket_name(&bucket);
    for args in [&[][..], &["--dry-run"][..]] {
        let up = env.up(args).await;
        assert_eq!(up.code, 1, "{up:?}");
        assert!(
            up.stderr.contains("names this stack needs are taken")
                && up.stderr.contains(&format!("S3 bucket {bucket} exists")),
            "{up:?}"
        );
    }
    assert_eq!(env.mutating_operations(), Vec::<String>::new());
}

/// A lock whose lease runs out is taken over: at once when it ran out a
/// whole lease ago, else once seen unchanged (not renewed) for half a
/// lease after its end (clocks of two machines may differ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_whose_lease_ran_out_is_taken_over() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let s3 = env.s3();
    let bucket = find_bucket(&s3).await.unwrap();

    // Expired a whole lease ago: taken over at once, whatever the clocks.
    lock_held_by_another(&s3, &bucket, -5_000, 2_000).await;
    env.change_code();
    let up = env.up(&["--lock-timeout", "0"]).await;
    up.assert_ok();
    assert!(
        up.stderr
            .contains("Took over the stack's lock from `chatctl up` by bob")
            && up.stderr.contains("its lease ran out"),
        "{up:?}"
    );
    assert!(!locked(&s3, &bucket).await);

    // A killed run's lease, ending in 2 s: a run that may wait, waits, then takes over.
    lock_held_by_another(&s3, &bucket, 2_000, 2_000).await;
    env.change_code();
    let up = env.up(&["--lock-timeout", "30s"]).await;
    up.assert_ok();
    assert!(
        up.stderr
            .contains("Waiting for the stack's lock, held by `chatctl up` by bob"),
        "{up:?}"
    );
    assert!(up.stderr.contains("Took over the stack's lock"), "{up:?}");
}

/// Two `up`s at once on a new stack: both succeed, one after the other
/// (one says it waits), and the stack has one API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ups_at_once_take_turns_and_make_one_stack() {
    let env = Env::start().await;
    let (first, second) = tokio::join!(env.up(&["--yes"]), env.up(&["--yes"]));
    first.assert_ok();
    second.assert_ok();
    let waited = [&first, &second]
        .iter()
        .filter(|run| {
            run.stderr
                .contains("Waiting for the stack's lock, held by `chatctl up`")
        })
        .count();
    assert_eq!(waited, 1, "{first:?}\n{second:?}");
    let apis = aws_sdk_apigatewayv2::Client::new(&env.sdk)
        .get_apis()
        .send()
        .await
        .unwrap();
    assert_eq!(apis.items().len(), 1, "{apis:?}");
    let status = env.chatctl(&["status", "--output", "json"]).await;
    assert_eq!(status.code, 0, "{status:?}");
    let report: Value = serde_json::from_str(&status.stdout).unwrap();
    let bucket = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "bucket")
        .cloned()
        .unwrap();
    assert_eq!(bucket["state"], "present", "{bucket}");
}

/// A stack deployed before the lock has no bucket: `down` makes it to lock
/// the stack once it sees the stack exists, and deletes it with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_of_a_stack_from_before_the_lock_locks_it_and_leaves_nothing() {
    let env = Env::start().await;
    env.up(&[]).await.assert_ok();
    let s3 = env.s3();
    let bucket = find_bucket(&s3).await.unwrap();
    for key in env.bucket_keys().await {
        s3.delete_object().bucket(&bucket).key(key).send().await.unwrap();
    }
    s3.delete_bucket().bucket(&bucket).send().await.unwrap();
    let down = env.chatctl(&["down", "--yes"]).await;
    down.assert_ok();
    assert!(down.stderr.contains(&format!("bucket {bucket}: deleted")), "{down:?}");
    assert_eq!(find_bucket(&s3).await, None);
    let status = env.chatctl(&["status", "--output", "json"]).await;
    let report: Value = serde_json::from_str(&status.stdout).unwrap();
    let present = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] != "missing")
        .count();
    assert_eq!(present, 0, "{report:#}");
}

/// A run whose lock is taken from it (here: overwritten, as a run that took
/// it over after a stall would) stops changing the stack at its next
/// renewal, saying why; the next `up` finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_loses_its_lock_stops_and_the_next_finishes() {
    let env = Env::start().await;
    let s3 = env.s3();
    let bucket = stack_bucket();
    let mut up_args = env.up_args();
    up_args.push("--yes".into());
    let up_args: Vec<&str> = up_args.iter().map(String::as_str).collect();
    // A lease of 2 s: renewed every 0.5 s.
    let lease = [("CHATCTL_LOCK_LEASE", "2s")];
    let take_it = async {
        let started = std::time::Instant::now();
        while !locked(&s3, &bucket).await {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "up never locked"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        lock_held_by_another(&s3, &bucket, 60_000, 60_000).await;
    };
    let (up, ()) = tokio::join!(env.chatctl_env(&up_args, &lease), take_it);
    assert_eq!(up.code, 1, "{up:?}");
    assert!(
        up.stderr
            .contains("stopped: the stack's lock was taken over by `chatctl up` by bob on ci-runner"),
        "{up:?}"
    );
    // The lock is the other run's still.
    assert!(locked(&s3, &bucket).await);
    env.chatctl(&["unlock", "--yes"]).await.assert_ok();
    env.up(&[]).await.assert_ok();
    let status = env.chatctl(&["status"]).await;
    assert_eq!(status.code, 0, "{status:?}");
}
