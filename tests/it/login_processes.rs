//! Login processes on their own (no homeserver): each runs in a fresh
//! instance and belongs to its user.

use weft_host::capture::{CaptureSessions, SESSION_TTL};
use weft_host::login_process::{LoginProcesses, ProcessError, Progress, StepInput, StepParamsView};
use weft_host::logins::LoginKey;
use weft_tests::host::TestHost;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookies_step_is_shaped_like_bridgev2_and_completes_a_login() {
    let test = TestHost::builder().plugin("probe").start().await;
    let processes = LoginProcesses::new(
        test.host.registry().clone(),
        test.host.logins().clone(),
        test.host.config().clone(),
        CaptureSessions::new(None, SESSION_TTL),
    );
    let (id, step) = processes
        .start("@carol:test", "probe:cookies", None)
        .await
        .unwrap();
    assert_eq!(step.kind, "cookies");
    let StepParamsView::Cookies(cookies) = &step.params else {
        panic!("{step:?}")
    };
    // bridgev2's field and source shapes.
    assert_eq!(cookies["url"], "https://probe.invalid/login");
    assert_eq!(cookies["fields"][0]["sources"][0]["type"], "local_storage");
    assert_eq!(cookies["fields"][0]["sources"][0]["name"], "probe_token");
    assert!(
        cookies["extract_js"]
            .as_str()
            .unwrap()
            .contains("localStorage")
    );

    let input = StepInput::Cookies(vec![("token".into(), "abc".into())]);
    let Progress::Completed(done) = processes
        .submit(&id, "@carol:test", &step.step_id, input)
        .await
        .unwrap()
    else {
        panic!("the login did not complete")
    };
    assert_eq!(done.key, LoginKey::new("probe", "user-abc"));
    // The login exists, owned by the user, and runs.
    let record = test.host.logins().store.get(&done.key).unwrap().unwrap();
    assert_eq!(record.owner, "@carol:test");
    assert!(test.host.registry().login(&done.key).is_some());
    // The finished process is gone.
    assert!(matches!(
        processes.current(&id, "@carol:test").await,
        Err(ProcessError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_process_belongs_to_its_user_and_cancelling_ends_it() {
    let test = TestHost::builder().plugin("probe").start().await;
    let processes = LoginProcesses::new(
        test.host.registry().clone(),
        test.host.logins().clone(),
        test.host.config().clone(),
        CaptureSessions::new(None, SESSION_TTL),
    );
    let (id, step) = processes
        .start("@carol:test", "probe:token", None)
        .await
        .unwrap();
    // Another user cannot see or drive it.
    assert!(matches!(
        processes.current(&id, "@mallory:test").await,
        Err(ProcessError::NotFound(_))
    ));
    let input = StepInput::UserInput(vec![("token".into(), "stolen".into())]);
    assert!(matches!(
        processes
            .submit(&id, "@mallory:test", &step.step_id, input)
            .await,
        Err(ProcessError::NotFound(_))
    ));
    // A wrong step id is refused and says which step is current.
    let input = StepInput::UserInput(vec![("token".into(), "x".into())]);
    let error = processes
        .submit(&id, "@carol:test", "nope", input)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProcessError::WrongStep { expected, .. } if expected == "probe.token"),
        "{error}"
    );

    processes.cancel(&id, "@carol:test").await.unwrap();
    let input = StepInput::UserInput(vec![("token".into(), "late".into())]);
    assert!(
        processes
            .submit(&id, "@carol:test", &step.step_id, input)
            .await
            .is_err()
    );
    assert!(test.host.logins().store.all().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_hold_more_login_processes_than_the_cap_nor_take_everyone_elses() {
    let test = TestHost::builder()
        .plugin("probe")
        .config("[bridge]\nmax-login-processes-per-user = 3\nmax-login-processes = 5")
        .start()
        .await;
    let processes = LoginProcesses::new(
        test.host.registry().clone(),
        test.host.logins().clone(),
        test.host.config().clone(),
        CaptureSessions::new(None, SESSION_TTL),
    );
    for _ in 0..3 {
        processes
            .start("@mallory:test", "probe:token", None)
            .await
            .unwrap();
    }
    // The fourth is refused, saying why, and holds no instance.
    let error = processes
        .start("@mallory:test", "probe:token", None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProcessError::TooManyProcesses(3)),
        "{error}"
    );
    assert_eq!(processes.of_user("@mallory:test").len(), 3);
    // Others still get theirs, up to the host-wide cap...
    let (carol, _) = processes
        .start("@carol:test", "probe:token", None)
        .await
        .unwrap();
    processes
        .start("@dave:test", "probe:token", None)
        .await
        .unwrap();
    // ...past which everyone waits for a slot.
    assert!(matches!(
        processes.start("@erin:test", "probe:token", None).await,
        Err(ProcessError::Busy)
    ));
    // A finished process frees its slot.
    processes.cancel(&carol, "@carol:test").await.unwrap();
    processes
        .start("@erin:test", "probe:token", None)
        .await
        .unwrap();
}
